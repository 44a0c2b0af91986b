"""Convolutional encoder and decoder shared by the reconstruction models.

Both halves are symmetric stacks of 3x3 convolutions: the encoder halves the
resolution at each level with a strided convolution, the decoder doubles it with
a nearest-neighbour resize followed by a 3x3 convolution. Resize + conv is used
instead of `nn.ConvTranspose` because its backward pass was measured ~3x faster
on XLA:CPU, and it avoids checkerboard artefacts in the residual maps. The pair
is computed at the low resolution (`upsample_conv`): the same function with less
than half the work.
"""

import dataclasses
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


@dataclasses.dataclass(frozen=True)
class Architecture:
  """The encoder/bottleneck/decoder settings of the reconstruction models (AE, VAE, DAE).

  Each field is the `config.model` key of the same name (defaults in
  configs/default.py). `channels`: features per resolution level, one halving
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


def _fold_taps(kernel, axis):
  """The 3 taps of `kernel` along `axis` as seen by odd and even output rows.

  After a nearest 2x upsampling, output row 2i-1 sees input rows i-1, i-1, i
  through taps 0, 1, 2, and output row 2i sees rows i-1, i, i: both are 2-tap
  filters over input rows (i-1, i), with two taps summed.
  """
  w0, w1, w2 = jnp.split(kernel, 3, axis)
  return jnp.concatenate([w0 + w1, w2], axis), jnp.concatenate([w0, w1 + w2], axis)


_NHWC = ("NHWC", "HWIO", "NHWC")


@jax.custom_vjp
def conv2x2_valid(x, kernel):
  """2x2 "VALID" convolution, stride 1, whose kernel gradient is one batched GEMM.

  x: (B, H, W, C_in), kernel: (2, 2, C_in, C_out) -> (B, H - 1, W - 1, C_out).
  The forward pass and the input gradient are XLA's. The kernel gradient is a
  contraction over (batch, row, column) of the four shifted views of `x` with
  the output gradient: four GEMMs in one `dot_general`, batched over the taps.
  XLA:CPU computes it as a convolution over the batch instead, after transposing
  both operands, at a fifth of the GEMM rate on our CPU; per device, the AE
  decoder's four layers ran 1.4-2.4x faster as GEMMs, and the AE / VAE train
  step 1.09x / 1.10x against the step with this undone (bench/change_ab.py,
  docs/change_ab.md).
  """
  return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_NHWC)


def _conv2x2_valid_fwd(x, kernel):
  return conv2x2_valid(x, kernel), (x, kernel)


def _conv2x2_valid_bwd(residuals, grad_y):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: conv2x2_valid.fun(x, kernel), x)
  (grad_x,) = input_vjp(grad_y)
  rows, cols = grad_y.shape[1:3]
  taps = jnp.stack([x[:, i:i + rows, j:j + cols] for i in range(2) for j in range(2)])
  grad_kernel = lax.dot_general(taps, grad_y, (((1, 2, 3), (0, 1, 2)), ((), ())))
  return grad_x, grad_kernel.reshape(kernel.shape)


conv2x2_valid.defvjp(_conv2x2_valid_fwd, _conv2x2_valid_bwd)


def upsample_conv(x, kernel, bias=None, activation=None):
  """3x3 "SAME" convolution of the nearest 2x upsampled `x`, computed at x's resolution.

  x: (B, h, w, C_in), kernel: (3, 3, C_in, C_out) -> (B, 2h, 2w, C_out), equal to
  `conv(jax.image.resize(x, (B, 2h, 2w, C_in), "nearest"), kernel)` up to float
  rounding. Output rows 2i-1 and 2i both see input rows i-1 and i only, each with
  its own folded 2-tap filter (`_fold_taps`; columns alike). So one 2x2
  convolution of the zero-padded input with 4 * C_out outputs (the four
  (row, column) parities) gives every output pixel; a depth-to-space reshape
  puts them in place and the first and last row and column (the padding's) are
  cropped. That is 16 instead of 36 multiply-adds per input pixel and channel
  pair, the upsampled input is never built, and the wider convolution suits
  XLA:CPU's kernels better. Measured (docs/conv_backward.md), 8 images of
  64 -> 128 px, 32 -> 16 channels: forward 4.0 vs 14.0 ms, forward + both
  gradients 17.7 vs 76.8 ms; the AE train step 1.45x (docs/benchmarks.md). The zero padding of the
  input is exactly the upsampled image's "SAME" padding. It is a separate
  `jnp.pad` before a "VALID" convolution because XLA:CPU's gradient of the
  explicitly padded convolution was ~5x slower here.

  `bias` (C_out,) and an elementwise `activation` are applied to the
  convolution's own output, before the depth-to-space: the same result as after
  it, but their forward and backward loops then read contiguous memory instead
  of the rearranged image (the AE / VAE train step 1.03x / 1.03x, 1.12x / 1.09x
  in an earlier run: bench/change_ab.py, docs/change_ab.md).
  """
  b, h, w, _ = x.shape
  features = kernel.shape[-1]
  phase_kernels = [
      col_phase
      for row_phase in _fold_taps(kernel, 0)
      for col_phase in _fold_taps(row_phase, 1)
  ]  # (row, column) parity: (odd, odd), (odd, even), (even, odd), (even, even)
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = conv2x2_valid(padded, jnp.concatenate(phase_kernels, axis=-1))
  if bias is not None:
    y = y + jnp.tile(bias, 4)  # channels are (parity, feature)
  if activation is not None:
    y = activation(y)
  # y[:, p, q] holds output rows 2p-1, 2p and columns 2q-1, 2q: rows -1 and 2h
  # (and those columns) lie in the padding.
  y = y.reshape(b, h + 1, w + 1, 2, 2, features).transpose(0, 1, 3, 2, 4, 5)
  y = y.reshape(b, 2 * h + 2, 2 * w + 2, features)
  return y[:, 1:-1, 1:-1]


def shifted_sum_conv(x, kernel):
  """3x3 "SAME" convolution as one matrix product and a sum of nine shifted maps.

  x: (B, H, W, C_in), kernel: (3, 3, C_in, C_out). Each pixel's channels are
  multiplied by all nine taps at once (a (C_in, 9 C_out) matrix), and output
  pixel (h, w) sums tap (i, j)'s map at (h + i - 1, w + j - 1). Worth it only for
  very few outputs, where XLA:CPU's convolution kernels idle: the decoder's
  single output channel at 128 px, 8 images, 16 -> 1: forward 1.0 vs 3.4 ms,
  forward + gradients 4.0 vs 12.7 ms (docs/conv_backward.md; wider outputs ran
  slower); the whole AE train step 1.01-1.05x faster (docs/benchmarks.md).
  """
  b, h, w, c_in = x.shape
  c_out = kernel.shape[-1]
  taps = kernel.transpose(2, 0, 1, 3).reshape(c_in, 9 * c_out)  # columns: (i, j, out)
  maps = (x.reshape(-1, c_in) @ taps).reshape(b, h, w, 9 * c_out)
  maps = jnp.pad(maps, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(maps[:, i:i + h, j:j + w, (3 * i + j) * c_out:(3 * i + j + 1) * c_out]
             for i in range(3) for j in range(3))


class OneOutputConv(nn.Module):
  """A 3x3 convolution to one channel (`shifted_sum_conv`), with `nn.Conv`'s parameters."""

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.linear.default_kernel_init, (3, 3, x.shape[-1], 1))
    bias = self.param("bias", nn.initializers.zeros_init(), (1,))
    return shifted_sum_conv(x, kernel) + bias


class UpsampleConv(nn.Module):
  """Nearest 2x upsampling then a 3x3 convolution, as one layer (`upsample_conv`).

  Its parameters are those of the `nn.Conv` it replaces (kernel (3, 3, C_in,
  features), bias; same initialisers), so a model's parameter tree and
  checkpoints do not depend on how the pair is computed. `kernel_transform`
  maps the kernel before use (the U-Net's weight standardisation); `activation`
  is applied to its output (computed before the depth-to-space, `upsample_conv`).
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
    return upsample_conv(x, kernel, bias, self.activation)


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
