"""Convolution gradients on XLA:CPU: XLA's own against GEMM-based rewrites, per layer shape.

    python bench/conv_backward_benchmark.py [--repeats=15] [--output=docs/conv_backward.md]

The training step's backward pass costs ~3.4x its forward (docs/benchmarks.md).
Before replacing `nn.Conv` by a layer with a custom VJP, this measures, for
every 3x3 convolution shape of the AE/VAE (128x128, batch 32 over 4 devices:
8 images per device) and of the denoising U-Net, the forward and each gradient:
  * kernel gradient dW: XLA's (`jax.vjp`), as im2col + one GEMM
    (`lax.conv_general_dilated_patches`), and as nine shifted slices, each one
    GEMM (no patch tensor);
  * input gradient dx: XLA's, and for stride 2 a polyphase rewrite (four
    stride-1 sub-convolutions, interleaved), for stride 1 the transposed
    convolution written as a forward convolution (flipped kernel).
Each variant is checked against XLA's gradient, jitted, and timed as the median
of --repeats calls, the variants of one shape interleaved so they share the
machine's load. One device (this process's default), float32.

A second table times forward + both gradients in bfloat16 against float32, and a
2048^2 GEMM in each: whether XLA:CPU turns this CPU's AVX512-BF16 into speed,
the precondition for a mixed-precision switch.

A third table times the layer rewrites the models use, against the layers they
replace, forward and forward + both gradients: the decoder's resize + 3x3 conv
against `kernels.upsample_conv` (every AE/VAE decoder shape), and the one-channel
output conv against `kernels.shifted_sum_conv`.
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_DN = ("NHWC", "HWIO", "NHWC")
# (name, batch per device, size, in, out, stride): the models' 3x3 convolutions.
SHAPES = (
    ("AE/VAE encoder 1", 8, 128, 1, 16, 2),
    ("AE/VAE encoder 2", 8, 64, 16, 32, 2),
    ("AE/VAE encoder 3", 8, 32, 32, 64, 2),
    ("AE/VAE decoder 128 px", 8, 128, 16, 16, 1),
    ("AE/VAE decoder 64 px", 8, 64, 32, 32, 1),
    ("AE/VAE decoder 32 px", 8, 32, 64, 64, 1),
    ("U-Net level 1 (width 16)", 8, 128, 16, 16, 1),
    ("U-Net up 1 (concat)", 8, 128, 32, 16, 1),
    ("U-Net level 4", 8, 16, 128, 128, 1),
)


def forward(x, w, stride):
  return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=_DN)


def dw_xla(x, w, g, stride):
  return jax.vjp(lambda k: forward(x, k, stride), w)[1](g)[0]


def dx_xla(x, w, g, stride):
  return jax.vjp(lambda v: forward(v, w, stride), x)[1](g)[0]


def dw_im2col(x, w, g, stride):
  kh, kw, cin, cout = w.shape
  patches = lax.conv_general_dilated_patches(x, (kh, kw), (stride, stride), "SAME",
                                             dimension_numbers=_DN)
  grad = jnp.einsum("nhwp,nhwo->po", patches, g)  # patch features are (cin, kh, kw)
  return grad.reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3)


def _same_padding(size, kernel, stride):
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _taps(x, kernel, stride, out_h, out_w):
  lo, hi = _same_padding(x.shape[1], kernel, stride)
  padded = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  return [padded[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
          for i in range(kernel) for j in range(kernel)]


def dw_slices(x, w, g, stride):
  kh, _, cin, cout = w.shape
  g2 = g.reshape(-1, cout)
  grads = [tap.reshape(-1, cin).T @ g2 for tap in _taps(x, kh, stride, g.shape[1], g.shape[2])]
  return jnp.stack(grads).reshape(w.shape)


def dx_forward_conv(x, w, g, stride):
  """Stride 1: the input gradient is the forward convolution with the flipped kernel."""
  del x, stride
  return lax.conv_general_dilated(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), (1, 1), "SAME",
                                  dimension_numbers=_DN)


def dx_polyphase(x, w, g, stride):
  """Stride 2, 3x3, even size: each output parity (a, b) of dx is a small stride-1 sum."""
  del stride
  n, height, width, cin = x.shape
  lo, _ = _same_padding(height, 3, 2)
  gp = jnp.pad(g, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = []
  for a in range(2):
    row = []
    for b in range(2):
      acc = jnp.zeros((n, height // 2, width // 2, cin), x.dtype)
      for ky in range(3):
        if (a + lo - ky) % 2:
          continue
        oy = (a + lo - ky) // 2
        for kx in range(3):
          if (b + lo - kx) % 2:
            continue
          ox = (b + lo - kx) // 2
          window = gp[:, 1 + oy:1 + oy + height // 2, 1 + ox:1 + ox + width // 2]
          acc = acc + window @ w[ky, kx].T
      row.append(acc)
    rows.append(jnp.stack(row, 3))
  return jnp.stack(rows, 2).reshape(n, height, width, cin)


def _variants(stride):
  dx_rewrite = ("dx polyphase", dx_polyphase) if stride == 2 else ("dx as forward conv",
                                                                    dx_forward_conv)
  return {"forward": forward, "dW XLA": dw_xla, "dW im2col GEMM": dw_im2col,
          "dW 9 slice GEMMs": dw_slices, "dx XLA": dx_xla, dx_rewrite[0]: dx_rewrite[1]}


def measure(shape, repeats):
  _, n, size, cin, cout, stride = shape
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (n, size, size, cin))
  w = 0.1 * jax.random.normal(keys[1], (3, 3, cin, cout))
  g = jax.random.normal(keys[2], (n, size // stride, size // stride, cout))
  fns, reference = {}, {}
  for name, fn in _variants(stride).items():
    args = (x, w, stride) if name == "forward" else (x, w, g, stride)
    fns[name] = (jax.jit(fn, static_argnums=len(args) - 1), args)
    out = jax.block_until_ready(fns[name][0](*args))
    kind = name.split()[0]
    if kind in reference:  # a rewrite: must equal XLA's gradient
      error = float(jnp.max(jnp.abs(out - reference[kind])) / jnp.max(jnp.abs(reference[kind])))
      if error > 1e-4:
        raise AssertionError(f"{name} differs from XLA's by {error:.1e} (relative)")
    else:
      reference[kind] = out
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, args) in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - start)
  flops = 2 * n * (size // stride) ** 2 * 9 * cin * cout
  return {name: statistics.median(t) for name, t in times.items()}, flops


def _median_seconds(fn, args, repeats):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def precision_rows(repeats):
  """(label, float32 ms, bfloat16 ms) of forward + both gradients per shape, then a GEMM."""
  rows = []
  for name, n, size, cin, cout, stride in SHAPES:
    timed = {}
    for dtype in (jnp.float32, jnp.bfloat16):
      x = jax.random.normal(jax.random.key(0), (n, size, size, cin)).astype(dtype)
      w = (0.1 * jax.random.normal(jax.random.key(1), (3, 3, cin, cout))).astype(dtype)

      def forward_backward(x, w, stride=stride):
        y, vjp = jax.vjp(lambda a, b: forward(a, b, stride), x, w)
        return vjp(y)

      timed[dtype] = _median_seconds(jax.jit(forward_backward), (x, w), repeats)
    rows.append((name, 1e3 * timed[jnp.float32], 1e3 * timed[jnp.bfloat16]))
  for dtype in (jnp.float32, jnp.bfloat16):
    a = jnp.ones((2048, 2048), dtype)
    seconds = _median_seconds(jax.jit(jnp.dot), (a, a), repeats)
    rows.append((f"GEMM 2048^2, GFLOP/s ({jnp.dtype(dtype).name})", 2 * 2048 ** 3 / seconds / 1e9,
                 None))
  return rows


def _resize_then_conv(x, w):
  n, h, width, c = x.shape
  up = jax.image.resize(x, (n, 2 * h, 2 * width, c), method="nearest")
  return forward(up, w, 1)


# (name, batch per device, input size, in, out): the AE/VAE decoder's upsampling layers.
UPSAMPLING_SHAPES = (("decoder 8 -> 16 px", 8, 8, 128, 128),
                     ("decoder 16 -> 32 px", 8, 16, 128, 64),
                     ("decoder 32 -> 64 px", 8, 32, 64, 32),
                     ("decoder 64 -> 128 px", 8, 64, 32, 16))


def rewrite_rows(repeats):
  """(label, ms of the plain layer and of the rewrite: forward, forward + both gradients)."""
  from brainseg_jax.models import kernels
  cases = [(f"{name} ({n}, {size}, {cin} -> {cout}): resize + conv vs upsample_conv",
            _resize_then_conv, kernels.upsample_conv, (n, size, size, cin), (3, 3, cin, cout))
           for name, n, size, cin, cout in UPSAMPLING_SHAPES]
  cases.append(("output conv (8, 128, 16 -> 1): conv vs shifted_sum_conv",
                lambda x, w: forward(x, w, 1), kernels.shifted_sum_conv, (8, 128, 128, 16),
                (3, 3, 16, 1)))
  rows = []
  for label, plain, rewrite, x_shape, w_shape in cases:
    x = jax.random.normal(jax.random.key(0), x_shape)
    w = 0.1 * jax.random.normal(jax.random.key(1), w_shape)
    timed = []
    for fn in (plain, rewrite):
      def forward_backward(x, w, fn=fn):
        y, vjp = jax.vjp(fn, x, w)
        return vjp(y)
      timed += [_median_seconds(jax.jit(fn), (x, w), repeats),
                _median_seconds(jax.jit(forward_backward), (x, w), repeats)]
    error = float(jnp.max(jnp.abs(plain(x, w) - rewrite(x, w))) / jnp.max(jnp.abs(plain(x, w))))
    if error > 1e-4:
      raise AssertionError(f"{label}: the rewrite differs by {error:.1e} (relative)")
    rows.append((label, *(1e3 * t for t in timed)))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--output", default="")
  args = parser.parse_args()
  lines = ["# Convolution gradients and precision on XLA:CPU", "",
           "Made by `python bench/conv_backward_benchmark.py --output=docs/conv_backward.md` "
           "(see its docstring for the variants); the variants of each shape are interleaved.", "",
           f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, jax {jax.__version__}, "
           f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} at the start; "
           f"median of {args.repeats} interleaved calls, ms (GFLOP/s of the forward in brackets).",
           "", "| layer (batch, size, in -> out, stride) | forward | dW XLA | dW im2col GEMM | "
           "dW 9 slice GEMMs | dx XLA | dx rewrite |", "|---|---:|---:|---:|---:|---:|---:|"]
  for shape in SHAPES:
    ms, flops = measure(shape, args.repeats)
    rewrite = next(k for k in ms if k.startswith("dx ") and k != "dx XLA")
    name, n, size, cin, cout, stride = shape
    cells = [f"{1e3 * ms[k]:.1f}" for k in ("forward", "dW XLA", "dW im2col GEMM",
                                            "dW 9 slice GEMMs", "dx XLA")]
    cells[0] += f" ({flops / ms['forward'] / 1e9:.0f})"
    lines.append(f"| {name} ({n}, {size}, {cin} -> {cout}, {stride}) | " + " | ".join(cells)
                 + f" | {1e3 * ms[rewrite]:.1f} ({rewrite[3:]}) |")
    print(lines[-1], flush=True)
  lines += ["", "Forward + both gradients, float32 against bfloat16 (ms), and the GEMM rate:", "",
            "| layer | float32 | bfloat16 | bfloat16 / float32 |", "|---|---:|---:|---:|"]
  for label, f32, bf16 in precision_rows(args.repeats):
    if bf16 is None:
      lines.append(f"| {label} | {f32:.0f} | | |")
    else:
      lines.append(f"| {label} | {f32:.1f} | {bf16:.1f} | {bf16 / f32:.2f}x |")
  lines += ["", "The layer rewrites the models use, against the layers they replace (ms; one "
            "device, median of repeated calls, the plain layer timed just before its rewrite):",
            "",
            "| layer | plain forward | rewrite forward | plain fwd + grads | rewrite fwd + grads |",
            "|---|---:|---:|---:|---:|"]
  for label, plain_f, plain_fb, new_f, new_fb in rewrite_rows(args.repeats):
    lines.append(f"| {label} | {plain_f:.1f} | {new_f:.1f} | {plain_fb:.1f} | {new_fb:.1f} |")
  text = "\n".join(lines) + "\n"
  print(text)
  if args.output:
    with open(args.output, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
