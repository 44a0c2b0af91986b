"""A speed change undone (`train_benchmark.py --undo`) computes the same network.

What each change bought is the step with it against the step with it undone
(bench/change_ab.py, the settings phase of bench/train_benchmark.py): that is
only a speed comparison if both compute the same values and gradients, and the
undo really puts the old computation back. The undone kernels go in through
`kernels.use` only, and are gone after it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import benchmark_report, undone
from brainseg_jax.models import kernels, layers

pytestmark = pytest.mark.slow  # compiles each undone decoder


def _decoder_loss():
  decoder = layers.Decoder(channels=(8, 16), out_channels=1)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 16))
  params = decoder.init(jax.random.PRNGKey(1), z)
  # Non-zero biases, so that where the bias is added matters.
  params = jax.tree.map(lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
  return (lambda params: jnp.sum(jnp.sin(decoder.apply(params, z)))), params


def _decoder_loss_and_grads():
  loss, params = _decoder_loss()
  return jax.value_and_grad(loss)(params)


def _decoder_program() -> str:
  """The decoder's loss as traced here (no compiling)."""
  loss, params = _decoder_loss()
  return str(jax.make_jaxpr(loss)(params))


def _assert_same_values(a, b):
  (loss, grads), (other_loss, other_grads) = a, b
  np.testing.assert_allclose(other_loss, loss, rtol=1e-5)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
               other_grads, grads)


@pytest.mark.parametrize("changes", [[c] for c in undone.KERNEL_CHANGES]
                         + [list(undone.KERNEL_CHANGES)], ids=[*undone.KERNEL_CHANGES, "all"])
def test_undone_change_computes_the_same_decoder(changes):
  assert set(changes) <= set(benchmark_report.CHANGES)
  program, values = _decoder_program(), _decoder_loss_and_grads()
  with kernels.use(undone.undone_kernels(changes)):
    undone_program, undone_values = _decoder_program(), _decoder_loss_and_grads()
  assert undone_program != program, f"--undo={','.join(changes)} left the computation as it was"
  _assert_same_values(values, undone_values)
  # Nothing of the undo is left: the default program again.
  assert kernels.active() is kernels.DEFAULT
  assert _decoder_program() == program


def test_each_kernel_change_undoes_something_of_its_own():
  programs = set()
  for change in undone.KERNEL_CHANGES:
    with kernels.use(undone.undone_kernels([change])):
      programs.add(_decoder_program())
  assert len(programs) == len(undone.KERNEL_CHANGES)


def test_other_changes_leave_the_kernels_and_unknown_ones_are_refused():
  assert undone.undone_kernels(["jitted_init", "huge_pages"]) == kernels.DEFAULT
  with pytest.raises(ValueError, match="unknown changes"):
    undone.undo_in_process(["no_such_change"])
