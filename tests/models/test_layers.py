"""The shared layers: the parameters of the convolutions they stand for, and their values."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from brainseg_jax.models import layers, unet


def _resize_then_conv(x, kernel):
  b, h, w, c = x.shape
  up = jax.image.resize(x, (b, 2 * h, 2 * w, c), method="nearest")
  return lax.conv_general_dilated(up, kernel, (1, 1), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


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
