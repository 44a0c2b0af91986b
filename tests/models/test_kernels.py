"""The layers' kernels compute what the plain XLA forms they replace compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax import test_util as jax_test_util

from brainseg_jax.models import kernels, layers

pytestmark = pytest.mark.slow  # gradient checks at every decoder shape


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
  got = kernels.upsample_conv(x, kernel)
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
  got = jax.jit(jax.grad(loss(kernels.upsample_conv), argnums=(0, 1)))(x, kernel)
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
  np.testing.assert_allclose(kernels.conv2x2_valid(x, kernel), _xla_conv2x2_valid(x, kernel),
                             rtol=1e-5, atol=1e-5)
  want = jax.grad(loss(_xla_conv2x2_valid), argnums=(0, 1))(x, kernel)
  got = jax.jit(jax.grad(loss(kernels.conv2x2_valid), argnums=(0, 1)))(x, kernel)
  for g, w_ in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w_, rtol=1e-4, atol=1e-5 * float(jnp.abs(w_).max()))


def test_conv2x2_valid_custom_gradient_passes_check_grads():
  # Finite differences need float64 to resolve the gradient to check_grads' tolerance.
  with jax.enable_x64(True):
    kx, kk = jax.random.split(jax.random.PRNGKey(3))
    x = jax.random.normal(kx, (2, 6, 5, 3), jnp.float64)
    kernel = jax.random.normal(kk, (2, 2, 3, 4), jnp.float64)
    jax_test_util.check_grads(kernels.conv2x2_valid, (x, kernel), order=1, modes=("rev",))


@pytest.mark.parametrize("shape", [SHAPES[3], SHAPES[4]])
def test_upsample_conv_bias_and_activation_act_as_after_the_upsampled_conv(shape):
  b, h, w, c_in, c_out = shape
  kx, kk, kb, kg = jax.random.split(jax.random.PRNGKey(5), 4)
  x = jax.random.normal(kx, (b, h, w, c_in))
  kernel = jax.random.normal(kk, (3, 3, c_in, c_out)) / np.sqrt(9 * c_in)
  bias = jax.random.normal(kb, (c_out,))
  weights = jax.random.normal(kg, (b, 2 * h, 2 * w, c_out))
  activation = lambda y: jax.nn.leaky_relu(y, 0.2)
  want_fn = lambda x, k, bias: activation(_resize_then_conv(x, k) + bias)
  got_fn = lambda x, k, bias: kernels.upsample_conv(x, k, bias, activation)
  np.testing.assert_allclose(got_fn(x, kernel, bias), want_fn(x, kernel, bias), rtol=1e-5,
                             atol=1e-5)
  loss = lambda f: lambda *args: jnp.sum(weights * f(*args))
  want = jax.grad(loss(want_fn), argnums=(0, 1, 2))(x, kernel, bias)
  got = jax.jit(jax.grad(loss(got_fn), argnums=(0, 1, 2)))(x, kernel, bias)
  for g, w_ in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w_, rtol=1e-4, atol=1e-4 * float(jnp.abs(w_).max()))


@pytest.mark.parametrize("shape", [(2, 16, 16, 16, 1), (1, 5, 7, 3, 1), (2, 9, 4, 8, 3)])
def test_shifted_sum_conv_equals_conv(shape):
  b, h, w, c_in, c_out = shape
  kx, kk, kg = jax.random.split(jax.random.PRNGKey(7), 3)
  x = jax.random.normal(kx, (b, h, w, c_in))
  kernel = jax.random.normal(kk, (3, 3, c_in, c_out)) / np.sqrt(9 * c_in)
  conv = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(kernels.shifted_sum_conv(x, kernel), conv(x, kernel), rtol=1e-5,
                             atol=1e-5)
  weights = jax.random.normal(kg, (b, h, w, c_out))
  loss = lambda f: lambda x, k: jnp.sum(weights * jnp.tanh(f(x, k)))
  want = jax.grad(loss(conv), argnums=(0, 1))(x, kernel)
  got = jax.jit(jax.grad(loss(kernels.shifted_sum_conv), argnums=(0, 1)))(x, kernel)
  for g, w_ in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w_, rtol=1e-4, atol=1e-4 * float(jnp.abs(w_).max()))


def test_layers_trace_with_the_kernels_in_use_and_the_default_is_restored_after():
  """`kernels.use` swaps what the blocks call, only inside its block (also when it raises)."""
  z = jax.random.normal(jax.random.PRNGKey(12), (2, 4, 4, 8))
  decoder = layers.Decoder((4, 8), out_channels=1)
  params = decoder.init(jax.random.PRNGKey(13), z)
  program = lambda: str(jax.make_jaxpr(lambda p: decoder.apply(p, z))(params))
  default_program = program()
  calls = []

  def counted(name):
    def kernel(*args):
      calls.append(name)
      return getattr(kernels.DEFAULT, name)(*args)
    return kernel

  swapped = kernels.Kernels(**{name: counted(name) for name in
                               ("upsample_conv", "conv2x2_valid", "one_output_conv")})
  with kernels.use(swapped) as in_use:
    assert in_use is swapped and kernels.active() is swapped
    assert program() == default_program  # the same kernels, called through the wrappers
  # Two upsampling layers, each one 2x2 convolution inside, then the output layer.
  assert calls == ["upsample_conv", "conv2x2_valid"] * 2 + ["one_output_conv"]
  assert kernels.active() is kernels.DEFAULT
  with pytest.raises(RuntimeError), kernels.use(kernels.Kernels(one_output_conv=None)):
    raise RuntimeError
  assert kernels.active() is kernels.DEFAULT
  assert program() == default_program
