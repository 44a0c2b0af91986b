"""Convolutional encoder and decoder shared by the reconstruction models.

Both halves are symmetric stacks of 3x3 convolutions: the encoder halves the
resolution at each level with a strided convolution, the decoder doubles it with
a nearest-neighbour resize followed by a 3x3 convolution. Resize + conv is used
instead of `nn.ConvTranspose` because its backward pass was measured ~3x faster
on XLA:CPU, and it avoids checkerboard artefacts in the residual maps. The pair
is computed at the low resolution (`kernels.upsample_conv`): the same function
with less than half the work. The blocks call such kernels through
`kernels.active()` (kernels.py: the kernels, and why they exist).
"""

import dataclasses
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from brainseg_jax.models import kernels


@dataclasses.dataclass(frozen=True)
class Architecture:
  """The encoder/bottleneck/decoder settings of the reconstruction models (AE, VAE, DAE).

  Each field is the `config.model` key of the same name (defaults in
  ae.model_config()). `channels`: features per resolution level, one halving
  each; `bottleneck`: "dense" (a latent vector of `latent_dim`) or "spatial" (a
  feature map of `latent_channels` at the lowest resolution); `norm`: "none",
  "group" or "layer".
  """

  channels: tuple[int, ...]
  bottleneck: str
  latent_dim: int
  latent_channels: int
  blocks_per_level: int
  norm: str

  @classmethod
  def from_config(cls, model_config) -> "Architecture":
    settings = {f.name: model_config[f.name] for f in dataclasses.fields(cls)}
    return cls(**{**settings, "channels": tuple(settings["channels"])})


def _norm(kind: str) -> nn.Module | None:
  if kind == "none":
    return None
  if kind == "group":
    return nn.GroupNorm(num_groups=8)
  if kind == "layer":
    return nn.LayerNorm()
  raise ValueError(f"unknown norm {kind!r}: expected 'none', 'group' or 'layer'")


class OneOutputConv(nn.Module):
  """A 3x3 convolution to one channel (`kernels.shifted_sum_conv`), with `nn.Conv`'s parameters."""

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.linear.default_kernel_init, (3, 3, x.shape[-1], 1))
    bias = self.param("bias", nn.initializers.zeros_init(), (1,))
    return kernels.active().one_output_conv(x, kernel) + bias


class UpsampleConv(nn.Module):
  """Nearest 2x upsampling then a 3x3 convolution, as one layer (`kernels.upsample_conv`).

  Its parameters are those of the `nn.Conv` it replaces (kernel (3, 3, C_in,
  features), bias; same initialisers), so a model's parameter tree and
  checkpoints do not depend on how the pair is computed. `kernel_transform`
  maps the kernel before use (the U-Net's weight standardisation); `activation`
  is applied to its output (computed before the depth-to-space, `kernels.upsample_conv`).
  """

  features: int
  kernel_transform: Callable | None = None
  activation: Callable | None = None

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.linear.default_kernel_init,
                        (3, 3, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    if self.kernel_transform is not None:
      kernel = self.kernel_transform(kernel)
    return kernels.active().upsample_conv(x, kernel, bias, self.activation)


class ConvBlock(nn.Module):
  """3x3 convolution (after a nearest 2x upsampling if `upsample`), optional
  normalisation, leaky ReLU."""

  features: int
  strides: int = 1
  norm: str = "none"
  upsample: bool = False

  @nn.compact
  def __call__(self, x):
    activation = lambda y: nn.leaky_relu(y, 0.2)
    norm = _norm(self.norm)
    if self.upsample and norm is None:
      # Named as the nn.Conv it stands for: same parameter tree either way.
      return UpsampleConv(self.features, activation=activation, name="Conv_0")(x)
    if self.upsample:
      x = UpsampleConv(self.features, name="Conv_0")(x)
    else:
      x = nn.Conv(self.features, (3, 3), strides=(self.strides, self.strides))(x)
    if norm is not None:
      x = norm(x)
    return activation(x)


class Upsample(nn.Module):
  """Doubles height and width: nearest-neighbour resize, then a ConvBlock."""

  features: int
  norm: str = "none"

  @nn.compact
  def __call__(self, x):
    return ConvBlock(self.features, norm=self.norm, upsample=True)(x)


class Encoder(nn.Module):
  """Image (B, H, W, C) -> feature map (B, H / 2^L, W / 2^L, channels[-1])."""

  channels: Sequence[int]
  blocks_per_level: int = 1
  norm: str = "none"

  @nn.compact
  def __call__(self, x):
    for features in self.channels:
      x = ConvBlock(features, strides=2, norm=self.norm)(x)
      for _ in range(self.blocks_per_level - 1):
        x = ConvBlock(features, norm=self.norm)(x)
    return x


class Decoder(nn.Module):
  """Feature map (B, h, w, C) -> image (B, h * 2^L, w * 2^L, out_channels).

  The output is linear: intensities are not squashed into [0, 1], so
  hyperintense anomalies the model cannot produce leave a residual instead of
  being clipped away.
  """

  channels: Sequence[int]
  out_channels: int = 1
  blocks_per_level: int = 1
  norm: str = "none"

  @nn.compact
  def __call__(self, z):
    for features in reversed(self.channels):
      z = Upsample(features, norm=self.norm)(z)
      for _ in range(self.blocks_per_level - 1):
        z = ConvBlock(features, norm=self.norm)(z)
    if self.out_channels == 1:
      # Named as the nn.Conv below: same parameter tree either way.
      return OneOutputConv(name="Conv_0")(z)
    return nn.Conv(self.out_channels, (3, 3))(z)


class Bottleneck(nn.Module):
  """Encoder features -> latent code with `num_outputs` values per unit.

  "dense": a vector of latent_dim (global code: anomalies cannot be copied
  through, but fine detail is lost); "spatial": a low-resolution feature map of
  latent_channels (keeps detail, but can learn to copy anomalies through).
  The VAE asks for two outputs per unit (mean and log-variance).
  """

  kind: str
  latent_dim: int
  latent_channels: int
  num_outputs: int = 1

  @nn.compact
  def __call__(self, h):
    if self.kind == "dense":
      return nn.Dense(self.num_outputs * self.latent_dim)(jnp.reshape(h, (h.shape[0], -1)))
    if self.kind == "spatial":
      return nn.Conv(self.num_outputs * self.latent_channels, (1, 1))(h)
    raise ValueError(f"unknown bottleneck {self.kind!r}: expected 'dense' or 'spatial'")


class FromLatent(nn.Module):
  """Latent code -> feature map of `spatial_shape` (h, w, c) for the decoder."""

  kind: str
  spatial_shape: tuple[int, int, int]

  @nn.compact
  def __call__(self, z):
    h, w, c = self.spatial_shape
    if self.kind == "dense":
      x = nn.Dense(h * w * c)(z).reshape(z.shape[0], h, w, c)
    else:
      x = nn.Conv(c, (1, 1))(z)
    return nn.leaky_relu(x, 0.2)
