"""The U-Net of the denoising autoencoder of Kascenas et al. (MIDL 2022).

Unlike the autoencoders in layers.py, a U-Net has no bottleneck: each level of
the encoder hands its features straight to the decoder level of the same
resolution (the skips). It could therefore learn the identity; what stops it is
the training objective (unet_dae.py): the input is corrupted by coarse noise, so
copying the input through the skips reproduces the noise.

As in the published network: two 3x3 convolutions per level, each followed by
swish and group norm, with weight-standardised kernels; 2x2 average pooling
down; the width doubles at each level; a linear 1x1 convolution out. Upsampling
is a nearest-neighbour resize and a 3x3 convolution instead of the paper's 2x2
transposed convolution, whose backward pass was ~3x slower on XLA:CPU; the pair
is computed at the low resolution (`kernels.upsample_conv`).
Padding is zero ("SAME"; the paper reflects): at the image border, outside
the brain, the images are zero anyway.
"""

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from brainseg_jax.models import layers


@dataclasses.dataclass(frozen=True)
class UNetArchitecture:
  """The U-Net's settings, each the `config.model` key of the same name (unet_dae.model_config).

  `base_width`: features at full resolution (64 in the paper), doubled at each
  level down; `levels`: resolution levels (4 in the paper: three halvings, so
  the resolution must be divisible by 2^(levels - 1)); `norm_groups`: groups of
  every group norm (a divisor of `base_width`, hence of every width).
  """

  base_width: int
  levels: int
  norm_groups: int

  @classmethod
  def from_config(cls, model_config) -> "UNetArchitecture":
    return cls(**{f.name: model_config[f.name] for f in dataclasses.fields(cls)})

  @property
  def widths(self) -> tuple[int, ...]:
    """Features per level, full resolution first."""
    return tuple(self.base_width * 2 ** level for level in range(self.levels))


def standardize_kernel(kernel):
  """The kernel standardised per output feature (weight standardisation).

  Qiao et al. 2019, as in the published network: zero mean and unit std over
  each output feature's fan-in. It was proposed for group norm with small
  batches, as here: a few slices per device.
  """
  mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  std = jnp.std(kernel, axis=(0, 1, 2), keepdims=True) + 1e-5
  return (kernel - mean) / std


def standardized_conv_general_dilated(lhs, kernel, *args, **kwargs):
  """`lax.conv_general_dilated` with a weight-standardised kernel."""
  return jax.lax.conv_general_dilated(lhs, standardize_kernel(kernel), *args, **kwargs)


class StandardizedConv(nn.Conv):
  """`nn.Conv` with a weight-standardised kernel; same parameters, same shapes."""

  conv_general_dilated: Callable = standardized_conv_general_dilated


class ConvPair(nn.Module):
  """Two (3x3 standardised conv, swish, group norm) layers: the work of one U-Net level."""

  features: int
  norm_groups: int

  @nn.compact
  def __call__(self, x):
    for _ in range(2):
      x = StandardizedConv(self.features, (3, 3))(x)
      x = nn.GroupNorm(num_groups=self.norm_groups)(nn.swish(x))
    return x


class Up(nn.Module):
  """Doubles the resolution, then merges the skip of that resolution.

  Nearest resize and a linear 3x3 convolution to `features` (the paper's
  transposed convolution is linear too), concatenated with the skip's
  `features` channels, then a ConvPair. The skip comes second along channels.
  """

  features: int
  norm_groups: int

  @nn.compact
  def __call__(self, x, skip):
    # Resize + standardised conv as one layer, named as the conv: same parameters.
    x = layers.UpsampleConv(self.features, standardize_kernel, name="StandardizedConv_0")(x)
    return ConvPair(self.features, self.norm_groups)(jnp.concatenate([x, skip], axis=-1))


class UNet(nn.Module):
  """Image (B, H, W, C) -> image (B, H, W, C), linear output."""

  architecture: UNetArchitecture

  @nn.compact
  def __call__(self, x):
    arch = self.architecture
    channels = x.shape[-1]
    skips = []
    for level, features in enumerate(arch.widths):
      if level:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
      x = ConvPair(features, arch.norm_groups)(x)
      skips.append(x)
    # The deepest level's output is the decoder's input, not a skip.
    for features, skip in zip(reversed(arch.widths[:-1]), reversed(skips[:-1]), strict=True):
      x = Up(features, arch.norm_groups)(x, skip)
    return nn.Conv(channels, (1, 1))(x)
