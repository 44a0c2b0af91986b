"""The intensity standardisation a run uses, stored with the model.

`config.dataset.standardize="nyul"` standardises every image a model sees
(data_prep/standardize.py). The standard scale is learned once, from the
training split, and written into the workdir (workdir.py) by whichever of
train or eval runs first (fitting is deterministic, so both would write the same
file); eval, predict and calibrate then read it from there, so a model always
meets new scans on the scale it was trained on, whatever data they come from.
"""

import os

import jax

from brainseg_jax.datasets import input_pipeline
from brainseg_jax.errors import UserError
from brainseg_jax.workdir import STANDARDIZATION_FILE, standardization_path
from data_prep.errors import PrepError
from data_prep.standardize import StandardScale


def for_run(config, workdir: str, builder=None) -> StandardScale | None:
  """The run's standard scale (None without standardisation): read, else fitted and saved."""
  if config.dataset.standardize == "none":
    return None
  path = standardization_path(workdir)
  if os.path.exists(path):
    try:
      return StandardScale.load(path)
    except PrepError as e:
      raise UserError(str(e)) from e
  if builder is None:
    raise UserError(f"{workdir} has no {STANDARDIZATION_FILE}, though its config standardises "
                    "intensities: train or evaluate the model first")
  standard = input_pipeline.fit_standard_scale(builder)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    standard.save(path)
  return standard
