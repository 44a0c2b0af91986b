"""predict on real scans: maps on the input's grid, aligned with the lesion."""

import json

import nibabel as nib
import numpy as np
import pytest

from brainseg_jax import scans
from brainseg_jax import workdir as workdir_lib
from configs import threshold as threshold_config
from tests.helpers import predict as _predict

pytestmark = pytest.mark.slow  # registers real scans, runs predict


@pytest.fixture(scope="module")
def glioma_flair(sample_data_dir):
  case = sample_data_dir / "tcga_glioma" / "TCGA-DU-7294"
  return (case / "TCGA-DU-7294_fla_bet_normalized.nii.gz",
          case / "TCGA-DU-7294_tumor_fusion_mav.nii.gz")


def test_maps_are_on_the_input_grid_and_find_the_tumour(vae_smoke_run, glioma_flair, tmp_path):
  workdir = vae_smoke_run[0]
  scan_path, tumour_path = glioma_flair
  _predict(workdir, scan_path, tmp_path)
  scan = nib.load(scan_path)
  stem = "TCGA-DU-7294_fla_bet_normalized"
  for kind in ("anomaly_map", "prediction", "reconstruction"):
    image = nib.load(tmp_path / f"{stem}_{kind}.nii.gz")
    assert image.shape == scan.shape
    np.testing.assert_allclose(image.affine, scan.affine, atol=1e-5)
  prediction = np.asarray(nib.load(tmp_path / f"{stem}_prediction.nii.gz").dataobj)
  assert set(np.unique(prediction)) <= {0, 1} and prediction.any()
  # Aligned: the anomaly map is higher inside the tumour than in the rest of the brain.
  anomaly = nib.load(tmp_path / f"{stem}_anomaly_map.nii.gz").get_fdata()
  tumour = nib.load(tumour_path).get_fdata() > 0
  brain = np.asarray(scan.dataobj) > 0
  assert anomaly[tumour].mean() > 1.5 * anomaly[brain & ~tumour].mean()
  assert (tmp_path / f"{stem}_overlay.png").stat().st_size > 10_000
  _check_report(tmp_path, stem)


def _check_report(out, stem):
  """The report's lesions add up to the prediction; its seconds to the stages."""
  content = json.loads((out / f"{stem}_report.json").read_text())
  for key in ("scan", "threshold", "threshold_source", "healthy_fpr_promised",
              "brain_fraction_flagged", "intensity_standardization", "registration_qc",
              "warning", "lesions", "total_lesion_volume_ml", "checkpoint_step", "model",
              "package_version", "command"):
    assert key in content, key
  # A skull-stripped scan registered to the template: QC measured and passed.
  assert content["registration_qc"]["passed"], content["registration_qc"]
  assert content["threshold_source"].startswith("model evaluation")
  assert content["intended_use"] == "research use only, not for diagnosis"
  prediction = nib.load(out / f"{stem}_prediction.nii.gz")
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


def test_raw_scan_with_skull_in_another_orientation_maps_back_onto_its_lesions(
    vae_smoke_run, sample_data_dir, tmp_path):
  """An elderly FLAIR: LPS, 2 mm, skull on, native head position; lesions are hyperintense."""
  scan_path = sample_data_dir / "elderly_flair" / "flair" / "Subj12_FL.nii.gz"
  lesions = nib.load(sample_data_dir / "elderly_flair" / "wmh" / "Subj12_FL_DLWMLS.nii.gz")
  _predict(vae_smoke_run[0], scan_path, tmp_path)
  scan = nib.load(scan_path)
  anomaly = nib.load(tmp_path / "Subj12_FL_anomaly_map.nii.gz")
  assert anomaly.shape == scan.shape
  np.testing.assert_allclose(anomaly.affine, scan.affine, atol=1e-5)
  anomaly = anomaly.get_fdata()
  lesion = lesions.get_fdata() > 0
  scored = anomaly > 0  # the brain the map covers, carried from the template
  assert anomaly[lesion].mean() > 1.5 * anomaly[scored & ~lesion].mean()


def test_missing_input_and_untrained_workdir_are_one_line_errors(vae_smoke_run, tmp_path):
  result = _predict(vae_smoke_run[0], tmp_path / "nope.nii.gz", tmp_path / "out", check=False)
  assert result.returncode == 1 and "does not exist" in result.stderr
  assert "Traceback" not in result.stderr
  result = _predict(tmp_path / "empty", tmp_path / "nope.nii.gz", tmp_path / "out", check=False)
  assert result.returncode == 1 and "Traceback" not in result.stderr


def _scan(path, shape, spacing_mm, seed=0):
  data = np.random.default_rng(seed).random(shape).astype(np.float32) + 1.0
  nib.save(nib.Nifti1Image(data, np.diag([spacing_mm] * 3 + [1.0])), path)
  return path


def test_a_failed_registration_names_the_scan(tmp_path, monkeypatch):
  from data_prep import pipeline, register
  from data_prep.config import PrepConfig
  from data_prep.errors import InputFileError

  def fail(*args, **kwargs):
    raise RuntimeError("Exception thrown in SimpleITK ImageRegistrationMethod_Execute:\n"
                       "All samples map outside moving image buffer")

  monkeypatch.setattr(register, "register_affine", fail)
  path = _scan(tmp_path / "scan.nii.gz", (48, 48, 48), 2.0)
  with pytest.raises(InputFileError, match="scan.nii.gz: registration to the MNI152 template "
                                           "failed: All samples map outside"):
    pipeline.preprocess(path, PrepConfig(resolution=32, modality="flair", n4=False))


@pytest.mark.parametrize("output, problem", [
    ("file", "is a file, not a directory"),
    ("file/below", "is not writable"),
    ("/proc/brainseg_out", "is not writable"),  # not writable even by root
])
def test_a_bad_output_dir_is_refused_before_any_scan_is_read(vae_smoke_run, glioma_flair,
                                                             tmp_path, output, problem):
  (tmp_path / "file").write_text("")
  output = tmp_path / output
  result = _predict(vae_smoke_run[0], glioma_flair[0], output, check=False)
  assert result.returncode == 1 and "--output_dir" in result.stderr and problem in result.stderr
  assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr


def test_a_single_bad_scan_is_exactly_one_line(vae_smoke_run, tmp_path):
  scan = _scan(tmp_path / "tiny.nii.gz", (8, 8, 8), 1.0)
  result = _predict(vae_smoke_run[0], scan, tmp_path / "out", check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f"error: {scan}: field of view 8 x 8 x 8 mm is not a head's (each side 40-500 mm): wrong "
      "voxel sizes in the header, or not a head scan"], result.stderr


def _three_channel_baseline(workdir, threshold=0.5):
  """An intensity baseline on FLAIR+T1+T1c, as evaluation leaves it (config and threshold)."""
  config = threshold_config.get_config("smoke")
  config.dataset.modalities = ("flair", "t1", "t1c")
  workdir.mkdir()
  (workdir / workdir_lib.EVALUATED_CONFIG_FILE).write_text(json.dumps(config.to_dict()))
  protocol = {"threshold": threshold, "healthy_fpr": 0.01, "threshold_source": "test"}
  (workdir / "metrics.json").write_text(json.dumps({"protocol": protocol,
                                                    "checkpoint_step": 0}))
  return workdir


def _session(sample_data_dir):
  case = sample_data_dir / "tcga_glioma" / "TCGA-DU-7294"
  return [case / f"TCGA-DU-7294_{m}_bet_normalized.nii.gz" for m in ("fla", "t1", "t1c")]


def test_a_model_of_several_modalities_needs_the_sessions_other_scans(tmp_path, sample_data_dir):
  workdir = _three_channel_baseline(tmp_path / "run")
  flair, t1, t1c = _session(sample_data_dir)
  result = _predict(workdir, flair, tmp_path / "out", check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
  assert "needs 2 further scan(s)" in result.stderr and "t1, t1c" in result.stderr
  # Given them (in-process, the --extra_inputs code path), it maps the session.
  from brainseg_jax import predict as predict_lib

  predict_lib.predict(str(workdir), str(flair), str(tmp_path / "out"),
                      extra_inputs=(str(t1), str(t1c)))
  report = json.loads((tmp_path / "out" / "TCGA-DU-7294_fla_bet_normalized_report.json")
                      .read_text())
  assert report["threshold"] == 0.5 and report["brain_fraction_flagged"] > 0


def test_several_modalities_are_the_channels_of_one_map(tmp_path, sample_data_dir):
  """Channel 0 is the FLAIR as a FLAIR-only model sees it; the map averages all channels."""
  from data_prep import pipeline
  # One registration thread, as the FLAIR-only run below: registration on several is not
  # bit-reproducible (on a loaded machine a few voxels differed by 0.05).
  scorer = scans.ScanScorer(str(_three_channel_baseline(tmp_path / "run")), threads=1)
  flair, t1, t1c = _session(sample_data_dir)
  prepared, volume, _, anomaly = scorer(str(flair), None, (str(t1), str(t1c)))
  assert volume.image.shape[-1] == 3
  alone = pipeline.preprocess(flair, scorer.prep)
  first = volume.image[..., 0]
  np.testing.assert_allclose(first, np.moveaxis(alone.image, -1, 0), atol=1e-5)
  assert not np.allclose(volume.image[..., 0], volume.image[..., 1])  # T1 is not FLAIR
  brain = volume.brain_mask[..., 0]
  np.testing.assert_allclose(anomaly[brain], np.abs(volume.image).mean(-1)[brain], atol=1e-6)


def test_a_folder_of_sessions_gives_a_multi_modal_model_its_channels_by_name(tmp_path,
                                                                           sample_data_dir):
  workdir = _three_channel_baseline(tmp_path / "run")
  folder = tmp_path / "scans"
  folder.mkdir()
  for path in _session(sample_data_dir):
    (folder / path.name).write_bytes(path.read_bytes())
  (folder / "other_flair.nii.gz").write_bytes(_session(sample_data_dir)[0].read_bytes())
  from brainseg_jax import predict as predict_lib

  results = predict_lib.predict(str(workdir), str(folder), str(tmp_path / "out"))
  assert list(results) == [str(folder / "TCGA-DU-7294_fla_bet_normalized.nii.gz")]
  summary = (tmp_path / "out" / "summary.csv").read_text()
  assert "other_flair.nii.gz: no t1, t1c scan of this session" in summary
  report = json.loads((tmp_path / "out" / "TCGA-DU-7294_fla_bet_normalized_report.json")
                      .read_text())
  assert report["brain_fraction_flagged"] > 0
