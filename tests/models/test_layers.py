"""The shared layers: the upsampling convolution is resize + conv, computed otherwise."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax import test_util as jax_test_util

from brainseg_jax.models import layers, unet


def _resize_then_conv(x, kernel):
  b, h, w, c = x.shape
  up = jax.image.resize(x, (b, 2 * h, 2 * w, c), method="nearest")
  return lax.conv_general_dilated(up, kernel, (1, 1), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


# (batch, height, width, in, out): every decoder shape of the AE/VAE and the U-Net's
# up-convolutions, plus odd, non-square and 1-pixel inputs.
SHAPES = [(2, 8, 8, 128, 128), (2, 16, 16, 128, 64), (2, 32, 32, 64, 32), (2, 64, 64, 32, 16),
          (1, 5, 7, 3, 4), (3, 1, 1, 2, 5), (1, 2, 9, 1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
def test_upsample_conv_equals_resize_then_conv(shape):
  b, h, w, c_in, c_out = shape
  kx, kk, kg = jax.random.split(jax.random.PRNGKey(sum(shape)), 3)
  x = jax.random.normal(kx, (b, h, w, c_in))
  kernel = jax.random.normal(kk, (3, 3, c_in, c_out)) / np.sqrt(9 * c_in)
  want = _resize_then_conv(x, kernel)
  got = layers.upsample_conv(x, kernel)
  assert got.shape == (b, 2 * h, 2 * w, c_out)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [SHAPES[3], SHAPES[4], SHAPES[5]])
def test_upsample_conv_gradients_equal_resize_then_conv(shape):
  b, h, w, c_in, c_out = shape
  kx, kk, kg = jax.random.split(jax.random.PRNGKey(1), 3)
  x = jax.random.normal(kx, (b, h, w, c_in))
  kernel = jax.random.normal(kk, (3, 3, c_in, c_out)) / np.sqrt(9 * c_in)
  weights = jax.random.normal(kg, (b, 2 * h, 2 * w, c_out))  # a loss that weighs every pixel
  loss = lambda f: lambda x, k: jnp.sum(weights * jnp.tanh(f(x, k)))
  want = jax.grad(loss(_resize_then_conv), argnums=(0, 1))(x, kernel)
  got = jax.jit(jax.grad(loss(layers.upsample_conv), argnums=(0, 1)))(x, kernel)
  for g, w_ in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w_, rtol=1e-4, atol=1e-4 * float(jnp.abs(w_).max()))


def _xla_conv2x2_valid(x, kernel):
  return lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape", SHAPES)
def test_conv2x2_valid_gradients_equal_xla_conv(shape):
  # The 2x2 convolution exactly as upsample_conv calls it: the padded input, 4 * C_out outputs.
  b, h, w, c_in, c_out = shape
  kx, kk, kg = jax.random.split(jax.random.PRNGKey(2), 3)
  x = jax.random.normal(kx, (b, h + 2, w + 2, c_in))
  kernel = jax.random.normal(kk, (2, 2, c_in, 4 * c_out)) / np.sqrt(4 * c_in)
  weights = jax.random.normal(kg, (b, h + 1, w + 1, 4 * c_out))
  loss = lambda f: lambda x, k: jnp.sum(weights * jnp.tanh(f(x, k)))
  np.testing.assert_allclose(layers.conv2x2_valid(x, kernel), _xla_conv2x2_valid(x, kernel),
                             rtol=1e-5, atol=1e-5)
  want = jax.grad(loss(_xla_conv2x2_valid), argnums=(0, 1))(x, kernel)
  got = jax.jit(jax.grad(loss(layers.conv2x2_valid), argnums=(0, 1)))(x, kernel)
  for g, w_ in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w_, rtol=1e-4, atol=1e-5 * float(jnp.abs(w_).max()))


def test_conv2x2_valid_custom_gradient_passes_check_grads():
  # Finite differences need float64 to resolve the gradient to check_grads' tolerance.
  with jax.enable_x64(True):
    kx, kk = jax.random.split(jax.random.PRNGKey(3))
    x = jax.random.normal(kx, (2, 6, 5, 3), jnp.float64)
    kernel = jax.random.normal(kk, (2, 2, 3, 4), jnp.float64)
    jax_test_util.check_grads(layers.conv2x2_valid, (x, kernel), order=1, modes=("rev",))


def test_upsample_layer_has_the_parameters_of_the_conv_it_replaces():
  """Same parameter tree and the same initial values as resize + nn.Conv: checkpoints
  and the PyTorch twin do not depend on how the pair is computed."""

  class ResizeThenConv(nn.Module):
    @nn.compact
    def __call__(self, x):
      b, h, w, c = x.shape
      x = jax.image.resize(x, (b, 2 * h, 2 * w, c), method="nearest")
      return nn.leaky_relu(nn.Conv(6, (3, 3))(x), 0.2)

  x = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 4, 3))
  block = layers.ConvBlock(6, upsample=True)
  params = block.init(jax.random.PRNGKey(3), x)
  ref = ResizeThenConv()
  ref_params = ref.init(jax.random.PRNGKey(3), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref_params)
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  # A bias of both signs (it is initialised to zero): the block adds it, and applies the
  # activation, before its depth-to-space.
  bias = jax.random.normal(jax.random.PRNGKey(4), (6,))
  params["params"]["Conv_0"]["bias"] = bias
  ref_params["params"]["Conv_0"]["bias"] = bias
  np.testing.assert_allclose(block.apply(params, x), ref.apply(ref_params, x), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("shape", [SHAPES[3], SHAPES[4]])
def test_upsample_conv_bias_and_activation_act_as_after_the_upsampled_conv(shape):
  b, h, w, c_in, c_out = shape
  kx, kk, kb, kg = jax.random.split(jax.random.PRNGKey(5), 4)
  x = jax.random.normal(kx, (b, h, w, c_in))
  kernel = jax.random.normal(kk, (3, 3, c_in, c_out)) / np.sqrt(9 * c_in)
  bias = jax.random.normal(kb, (c_out,))
  weights = jax.random.normal(kg, (b, 2 * h, 2 * w, c_out))
  activation = lambda y: nn.leaky_relu(y, 0.2)
  want_fn = lambda x, k, bias: activation(_resize_then_conv(x, k) + bias)
  got_fn = lambda x, k, bias: layers.upsample_conv(x, k, bias, activation)
  np.testing.assert_allclose(got_fn(x, kernel, bias), want_fn(x, kernel, bias), rtol=1e-5,
                             atol=1e-5)
  loss = lambda f: lambda *args: jnp.sum(weights * f(*args))
  want = jax.grad(loss(want_fn), argnums=(0, 1, 2))(x, kernel, bias)
  got = jax.jit(jax.grad(loss(got_fn), argnums=(0, 1, 2)))(x, kernel, bias)
  for g, w_ in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w_, rtol=1e-4, atol=1e-4 * float(jnp.abs(w_).max()))


def test_unet_up_convolution_is_the_standardised_resize_then_conv():
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 4, 4, 8))
  skip = jax.random.normal(jax.random.PRNGKey(5), (2, 8, 8, 4))
  up = unet.Up(4, norm_groups=2)
  params = up.init(jax.random.PRNGKey(6), x, skip)
  kernel = params["params"]["StandardizedConv_0"]["kernel"]
  bias = params["params"]["StandardizedConv_0"]["bias"]
  assert kernel.shape == (3, 3, 8, 4)
  want = _resize_then_conv(x, unet.standardize_kernel(kernel)) + bias
  _, state = up.apply(params, x, skip, capture_intermediates=True)
  got = state["intermediates"]["StandardizedConv_0"]["__call__"][0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 16, 16, 16, 1), (1, 5, 7, 3, 1), (2, 9, 4, 8, 3)])
def test_shifted_sum_conv_equals_conv(shape):
  b, h, w, c_in, c_out = shape
  kx, kk, kg = jax.random.split(jax.random.PRNGKey(7), 3)
  x = jax.random.normal(kx, (b, h, w, c_in))
  kernel = jax.random.normal(kk, (3, 3, c_in, c_out)) / np.sqrt(9 * c_in)
  conv = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(layers.shifted_sum_conv(x, kernel), conv(x, kernel), rtol=1e-5,
                             atol=1e-5)
  weights = jax.random.normal(kg, (b, h, w, c_out))
  loss = lambda f: lambda x, k: jnp.sum(weights * jnp.tanh(f(x, k)))
  want = jax.grad(loss(conv), argnums=(0, 1))(x, kernel)
  got = jax.jit(jax.grad(loss(layers.shifted_sum_conv), argnums=(0, 1)))(x, kernel)
  for g, w_ in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w_, rtol=1e-4, atol=1e-4 * float(jnp.abs(w_).max()))


@pytest.mark.parametrize("out_channels", [1, 3])
def test_decoder_output_conv_has_the_parameters_of_nn_conv(out_channels):
  z = jax.random.normal(jax.random.PRNGKey(8), (2, 4, 4, 8))
  decoder = layers.Decoder((4, 8), out_channels=out_channels)
  params = decoder.init(jax.random.PRNGKey(9), z)["params"]
  assert params["Conv_0"]["kernel"].shape == (3, 3, 4, out_channels)
  # The output layer alone against nn.Conv initialised with the same key.
  features = jax.random.normal(jax.random.PRNGKey(10), (2, 16, 16, 4))
  ref = nn.Conv(out_channels, (3, 3))
  ref_params = ref.init(jax.random.PRNGKey(11), features)
  layer = layers.OneOutputConv() if out_channels == 1 else nn.Conv(out_channels, (3, 3))
  layer_params = layer.init(jax.random.PRNGKey(11), features)
  jax.tree.map(np.testing.assert_array_equal, layer_params, ref_params)
  np.testing.assert_allclose(layer.apply(layer_params, features), ref.apply(ref_params, features),
                             rtol=1e-5, atol=1e-5)
