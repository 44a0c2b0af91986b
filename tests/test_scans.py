"""The scan loop and the checks on what a trained model gives for a scan."""

import numpy as np
import pytest

from brainseg_jax import scans
from brainseg_jax.errors import UserError


def test_a_map_with_nan_or_inf_is_refused_naming_the_scan():
  scans.require_finite(np.zeros((2, 4, 4), np.float32), "scan.nii.gz", "runs/x")
  for bad in (np.nan, np.inf):
    anomaly = np.zeros((2, 4, 4), np.float32)
    anomaly[1, 2, 3] = bad
    with pytest.raises(UserError, match="scan.nii.gz: the model in runs/x gave 1 non-finite"):
      scans.require_finite(anomaly, "scan.nii.gz", "runs/x")


def test_a_scan_that_fails_in_any_way_is_skipped_and_the_others_go_on():
  def process(path):
    if path == "b":
      raise ValueError("a dtype nobody foresaw")
    if path == "c":
      raise UserError("c: not a readable NIfTI file")
    return path.upper()

  results, failures = scans.for_each_scan(["a", "b", "c", "d"], process)
  assert results == {"a": "A", "d": "D"}
  assert failures == {"b": "ValueError: a dtype nobody foresaw",
                      "c": "c: not a readable NIfTI file"}


def test_a_folder_where_nothing_can_be_processed_is_one_error():
  def process(path):
    raise UserError(f"{path}: bad")

  with pytest.raises(UserError, match="no scan could be processed; first error: a: bad"):
    scans.for_each_scan(["a", "b"], process)
