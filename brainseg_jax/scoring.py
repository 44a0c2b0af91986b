"""Anomaly maps: what the model cannot reconstruct, inside the brain.

One jitted function scores a whole volume's slices at once; it compiles once
per volume shape, so every volume of a dataset reuses the same executable.
"""

import jax
import jax.numpy as jnp

from brainseg_jax.models import Model

RESIDUALS = ("abs", "positive")


def make_scorer(model: Model, residual: str = "abs"):
  """Returns jitted (params, images, brain_mask) -> (reconstruction, anomaly map).

  residual "abs" scores |x - x_hat|; "positive" scores max(x - x_hat, 0), for
  anomalies known to be hyperintense (FLAIR lesions), where a too-bright
  reconstruction is not a finding.
  """
  if residual not in RESIDUALS:
    raise ValueError(f"unknown residual {residual!r}: expected one of {RESIDUALS}")

  @jax.jit
  def score(params, images, brain_mask):
    recon = model.reconstruct(params, images)
    diff = images - recon
    anomaly = jnp.abs(diff) if residual == "abs" else jnp.maximum(diff, 0.0)
    return recon, jnp.where(brain_mask, anomaly, 0.0)

  return score
