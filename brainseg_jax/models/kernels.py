"""Pure-JAX convolution kernels of the decoder's layers (layers.py), and their seam.

Each computes what a plain XLA convolution computes (resize + conv, a 2x2
convolution, a 3x3 convolution to one channel) in another form, because XLA:CPU
runs the original forms slowly: the docstrings give the measurements
(docs/conv_backward.md, docs/benchmarks.md, docs/change_ab.md). The linen blocks
of layers.py call them through `active()`, which is `DEFAULT` unless a benchmark
swaps one back for the form it replaced (`use`).
"""

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
from jax import lax


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
  convolution (`active().conv2x2_valid`: `conv2x2_valid` unless a benchmark
  swaps it, `use`) of the zero-padded input with 4 * C_out outputs (the four
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
  y = active().conv2x2_valid(padded, jnp.concatenate(phase_kernels, axis=-1))
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


@dataclasses.dataclass(frozen=True)
class Kernels:
  """The kernels the linen blocks of layers.py call, each by what it computes.

  `upsample_conv(x, kernel, bias, activation)`: a 3x3 "SAME" convolution of the
  nearest 2x upsampled `x`, plus bias, then activation (`UpsampleConv`);
  `conv2x2_valid(x, kernel)`: the 2x2 "VALID" convolution inside `upsample_conv`;
  `one_output_conv(x, kernel)`: a 3x3 "SAME" convolution to one channel
  (`OneOutputConv`).
  """

  upsample_conv: Callable = upsample_conv
  conv2x2_valid: Callable = conv2x2_valid
  one_output_conv: Callable = shifted_sum_conv


DEFAULT = Kernels()
_active: contextvars.ContextVar[Kernels] = contextvars.ContextVar("kernels", default=DEFAULT)


def active() -> Kernels:
  """The kernels the layers trace with here: `DEFAULT`, or those of the enclosing `use`."""
  return _active.get()


@contextlib.contextmanager
def use(kernels: Kernels) -> Iterator[Kernels]:
  """Layers traced inside this block call `kernels` instead of `DEFAULT`; restored on exit.

  For benchmarks that measure what a kernel bought (bench/undone.py: the train
  step against the step with one kernel put back as it was); training and
  inference never call it. The kernels are read when a function is traced: a
  function jitted inside the block keeps them in its compiled program, and one
  traced before the block is not traced again by entering it. Per thread (a
  context variable): other threads trace with `DEFAULT`.
  """
  token = _active.set(kernels)
  try:
    yield kernels
  finally:
    _active.reset(token)
