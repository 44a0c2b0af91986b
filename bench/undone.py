"""The forms the benchmarked changes replaced, put back by bench/train_benchmark.py --undo.

What a change bought is the train step with it against the step with it undone
(bench/change_ab.py; the settings and memory phases of train_benchmark.py). The
old forms live here, in the benchmark, and reach the library only through its
documented seams; no library function is replaced by name:
  * the decoder's kernels (KERNEL_CHANGES): `kernels.use(undone_kernels(changes))`
    (brainseg_jax/models/kernels.py), entered by the JAX worker for its life;
  * the initial train state (`jitted_init`): the worker builds it with
    `create_train_state(changes)`, which is eager, as before, when undone;
  * the freed heap (`release_freed_heap`): host_memory.KEEP_FREED_HEAP in the
    worker's environment (`undo_in_process`);
  * SimpleITK (`lazy_imports`): imported by the worker as training did
    (`undo_in_process`);
  * huge pages (`huge_pages`): the parent starts the worker without the malloc
    tunable (train_benchmark.Worker).
"""

import dataclasses
import os

import jax

from bench import benchmark_report
from brainseg_jax import config as config_lib
from brainseg_jax import host_memory, models
from brainseg_jax.models import kernels

KERNEL_CHANGES = ("upsample_conv", "activation_before_depth_to_space", "conv2x2_gemm_grad",
                  "one_output_conv")
_NHWC = ("NHWC", "HWIO", "NHWC")


def resize_then_conv(x, kernel):
  """The decoder's upsampling before `kernels.upsample_conv`: nearest resize, then 3x3 conv."""
  b, h, w, c = x.shape
  x = jax.image.resize(x, (b, 2 * h, 2 * w, c), method="nearest")
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


def then_bias_and_activation(upsampled_conv):
  """`kernels.upsample_conv`'s signature; bias and activation after `upsampled_conv(x, kernel)`."""
  def upsample_conv(x, kernel, bias=None, activation=None):
    y = upsampled_conv(x, kernel) + (0 if bias is None else bias)
    return y if activation is None else activation(y)
  return upsample_conv


def conv3x3_same(x, kernel):
  """The output layer's convolution before `kernels.shifted_sum_conv`: XLA's, as `nn.Conv`'s."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


def undone_kernels(changes) -> kernels.Kernels:
  """`kernels.DEFAULT` with the kernel changes among `changes` undone (any order, any subset)."""
  undone = kernels.DEFAULT
  for change in changes:
    if change == "upsample_conv":
      undone = dataclasses.replace(
          undone, upsample_conv=then_bias_and_activation(resize_then_conv))
    elif change == "activation_before_depth_to_space":
      # Wrapping an undone upsample_conv (already bias and activation after it) changes nothing.
      undone = dataclasses.replace(
          undone, upsample_conv=then_bias_and_activation(undone.upsample_conv))
    elif change == "conv2x2_gemm_grad":
      # The convolution the custom VJP wraps: XLA's own gradient.
      undone = dataclasses.replace(undone, conv2x2_valid=kernels.conv2x2_valid.fun)
    elif change == "one_output_conv":
      undone = dataclasses.replace(undone, one_output_conv=conv3x3_same)
  return undone


def eager_train_state(model, config):
  """As `models.create_train_state` before it was jitted: `init` run op by op, no heap release."""
  return model.create_state(jax.random.key(config.seed), config_lib.image_shape(config))


def create_train_state(changes):
  """The function that builds a worker's initial train state, with `changes` undone."""
  return eager_train_state if "jitted_init" in changes else models.create_train_state


def undo_in_process(changes) -> None:
  """Puts back, in this process, the process-wide changes among `changes`; checks every name."""
  unknown = [change for change in changes if change not in benchmark_report.CHANGES]
  if unknown:
    raise ValueError(f"unknown changes {unknown}: known are {list(benchmark_report.CHANGES)}")
  if "lazy_imports" in changes:
    import SimpleITK  # noqa: F401  (what training imported before)
  if "release_freed_heap" in changes:
    os.environ[host_memory.KEEP_FREED_HEAP] = "1"
