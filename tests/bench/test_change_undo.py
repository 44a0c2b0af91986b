"""A speed change undone (`train_benchmark.py --undo`) computes the same network.

What each change bought is the step with it against the step with it undone
(bench/change_ab.py, the settings phase of bench/train_benchmark.py): that is
only a speed comparison if both compute the same values and gradients, and the
undo really puts the old computation back.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import benchmark_report, train_benchmark
from brainseg_jax.models import layers

MODEL_CHANGES = ["upsample_conv", "one_output_conv", "conv2x2_gemm_grad",
                 "activation_before_depth_to_space"]


def _decoder_loss_and_grads():
  decoder = layers.Decoder(channels=(8, 16), out_channels=1)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 16))
  params = decoder.init(jax.random.PRNGKey(1), z)
  # Non-zero biases, so that where the bias is added matters.
  params = jax.tree.map(lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
  loss = lambda params: jnp.sum(jnp.sin(decoder.apply(params, z)))
  return jax.value_and_grad(loss)(params), jax.make_jaxpr(loss)(params)


@pytest.mark.parametrize("change", MODEL_CHANGES)
def test_undone_change_computes_the_same_decoder(change, monkeypatch):
  assert change in benchmark_report.CHANGES
  for name in ("upsample_conv", "conv2x2_valid", "OneOutputConv"):  # restored after the test
    monkeypatch.setattr(layers, name, getattr(layers, name))
  (loss, grads), program = _decoder_loss_and_grads()
  train_benchmark._undo(change)
  (undone_loss, undone_grads), undone_program = _decoder_loss_and_grads()
  assert str(undone_program) != str(program), f"--undo={change} left the computation as it was"
  np.testing.assert_allclose(undone_loss, loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               undone_grads, grads)
