"""predict's per-scan report: lesion components in scanner units, and the warning."""

import dataclasses

import nibabel as nib
import numpy as np

from brainseg_jax import report
from brainseg_jax.workdir import Threshold
from data_prep.qc import RegistrationQC


def _prediction():
  mask = np.zeros((20, 20, 10), np.uint8)
  mask[2:6, 2:6, 2:4] = 1  # 32 voxels
  mask[10:12, 10:13, 5:6] = 1  # 6 voxels
  affine = np.diag([2.0, 2.0, 3.0, 1.0])
  affine[:3, 3] = (-10.0, 5.0, 7.0)
  return nib.Nifti1Image(mask, affine)


def test_components_are_largest_first_with_volume_and_centre_in_scanner_mm():
  components = report.lesion_components(_prediction())
  assert [c["voxels"] for c in components] == [32, 6]
  np.testing.assert_allclose([c["volume_ml"] for c in components], [32 * 0.012, 6 * 0.012])
  # centre of voxels 2..5, 2..5, 2..3 is (3.5, 3.5, 2.5) -> world via the affine
  np.testing.assert_allclose(components[0]["centre_scanner_mm"], [-3.0, 12.0, 14.5])


def test_warning_only_when_far_above_the_promised_fraction():
  threshold = Threshold(0.5, 0.01, "test", 60)
  quiet = report.scan_report("s", threshold, 0.02, _prediction(), modality="flair")
  assert quiet["warning"] is None
  warned = report.scan_report("s", threshold, 0.12, _prediction(), modality="flair")
  assert "12.0% of the brain is flagged" in warned["warning"]
  assert "WARNING" in report.caption(warned)


def test_a_failed_registration_is_reported_and_warned_about():
  threshold = Threshold(0.5, 0.01, "test", 60)
  good = RegistrationQC(volume_scale=0.8, brain_outside_head=0.001, rim_dark_excess=0.02,
                        tissue_around_brain=0.5, brain_coverage=1.0)
  bad = dataclasses.replace(good, brain_outside_head=0.2)
  warned = report.scan_report("s", threshold, 0.005, _prediction(), bad, modality="flair")
  assert warned["registration_qc"]["passed"] is False
  assert warned["registration_qc"]["brain_outside_head"] == 0.2
  assert warned["registration_qc"]["skull_stripped"] is False
  assert "registration to the template looks wrong" in warned["warning"]
  assert "registration QC failed" in report.caption(warned)
  passed = report.scan_report("s", threshold, 0.005, _prediction(), good, modality="flair")
  assert passed["registration_qc"]["passed"] and passed["warning"] is None
