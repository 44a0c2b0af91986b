"""predict's per-scan report: lesion components in scanner units, and the warning."""

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest

from brainseg_jax import report
from brainseg_jax.workdir import Threshold
from data_prep.qc import RegistrationQC
from tests.helpers import run


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


@pytest.mark.slow
def test_predict_writes_a_report_whose_lesions_add_up_to_the_prediction(vae_smoke_run, tmp_path,
                                                                        sample_data_dir):
  scan = sample_data_dir / "tcga_glioma" / "TCGA-DU-7294" / "TCGA-DU-7294_fla_bet_normalized.nii.gz"
  run(["-m", "brainseg_jax.predict", f"--workdir={vae_smoke_run[0]}", f"--input={scan}",
       f"--output_dir={tmp_path}"], None)
  stem = "TCGA-DU-7294_fla_bet_normalized"
  content = json.loads((tmp_path / f"{stem}_report.json").read_text())
  for key in ("scan", "threshold", "threshold_source", "healthy_fpr_promised",
              "brain_fraction_flagged", "intensity_standardization", "registration_qc",
              "warning", "lesions", "total_lesion_volume_ml"):
    assert key in content, key
  # A skull-stripped scan registered to the template: QC measured and passed.
  assert content["registration_qc"]["passed"], content["registration_qc"]
  assert content["threshold_source"].startswith("model evaluation")
  assert content["intended_use"] == "research use only, not for diagnosis"
  prediction = nib.load(tmp_path / f"{stem}_prediction.nii.gz")
  voxel_ml = abs(np.linalg.det(prediction.affine[:3, :3])) / 1000
  flagged = int((np.asarray(prediction.dataobj) > 0).sum())
  assert flagged > 0
  assert sum(c["voxels"] for c in content["lesions"]) == flagged
  np.testing.assert_allclose(content["total_lesion_volume_ml"], flagged * voxel_ml, rtol=1e-6)
  sizes = [c["voxels"] for c in content["lesions"]]
  assert sizes == sorted(sizes, reverse=True)
  # Where the seconds went, by stage: preprocessing's own stages, then predict's.
  seconds = content["seconds"]
  assert set(seconds) == {"preprocess_stages", "preprocess", "score", "write NIfTI",
                          "report, overlay PNG"}
  stages = seconds["preprocess_stages"]
  assert {"load", "N4 bias correction", "registration", "to output grid, masks, QC"} <= set(stages)
  assert all(v >= 0 for v in stages.values())
  # The preprocessing stages are timed inside the whole "preprocess" stage.
  assert sum(stages.values()) <= seconds["preprocess"] + 1e-2
