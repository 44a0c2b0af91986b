"""predict on what a hostile user gives it: bad scans, edited runs, a full disk, signals.

Nothing silent: every case ends in one line naming the file or key, or the scan is
skipped with its reason while the others go on; a scan's files are all there or none.
"""

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import predict as _predict

pytestmark = pytest.mark.slow  # runs predict


@pytest.fixture(scope="module")
def good_scan(sample_data_dir):
  """An elderly FLAIR scan (skull on, 2 mm) that passes registration QC: quick to predict."""
  return sample_data_dir / "elderly_flair" / "flair" / "Subj4_FL.nii.gz"


def _bad_scans(folder):
  """One scan of each kind that once ended in a traceback, a memory bomb or a silent result."""
  from tests.data_prep.test_load_header import _header_only

  affine = np.diag([2.0, 2.0, 2.0, 1.0])
  _header_only(folder / "bomb.nii.gz", (2000, 2000, 2000), 0.1)
  _header_only(folder / "wide.nii.gz", (64, 64, 64), 10.0)  # a 640 mm "head"
  rgb = np.zeros((60, 60, 50), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
  nib.save(nib.Nifti1Image(rgb, affine), str(folder / "rgb.nii.gz"))
  nib.save(nib.Nifti1Image(np.ones((60, 60, 50), np.complex64), affine),
           str(folder / "complex.nii.gz"))
  nib.save(nib.Nifti1Image(np.ones((60, 60, 50), np.float32), affine), str(folder / "code.nii"))
  raw = bytearray((folder / "code.nii").read_bytes())
  raw[70:72] = np.int16(9999).tobytes()  # datatype code
  (folder / "code.nii").write_bytes(bytes(raw))
  return {"bomb": "declares 2000 x 2000 x 2000 voxels", "wide": "field of view 640",
          "rgb": "is not a grey-level image", "complex": "complex-valued voxels",
          "code": "unreadable NIfTI header"}


def _disagreeing_orientations(scan_path, target):
  """The scan with a qform 20 mm off its sform: viewers differ in which they show."""
  scan = nib.load(scan_path)
  shifted = scan.affine.copy()
  shifted[:3, 3] += 20.0
  image = nib.Nifti1Image(np.asarray(scan.dataobj), scan.affine)
  image.set_qform(shifted, code=1)
  nib.save(image, str(target))
  return shifted


def test_a_folder_of_bad_scans_and_a_good_one_does_the_good_one(vae_smoke_run, good_scan,
                                                                tmp_path):
  folder = tmp_path / "scans"
  folder.mkdir()
  reasons = _bad_scans(folder)
  qform = _disagreeing_orientations(good_scan, folder / "good.nii.gz")
  result = _predict(vae_smoke_run[0], folder, tmp_path / "out")
  assert "Traceback" not in result.stderr
  for name, reason in reasons.items():
    skipped = [line for line in result.stderr.splitlines() if f"skipped {folder / name}" in line]
    assert len(skipped) == 1 and reason in skipped[0], (name, result.stderr[-3000:])
  assert f"1 of {len(reasons) + 1} scans done, {len(reasons)} skipped" in result.stderr
  out = tmp_path / "out"
  assert sorted(p.name for p in out.iterdir()) == sorted(["summary.csv"] + [
      f"good_{kind}" for kind in ("anomaly_map.nii.gz", "brain_mask.nii.gz", "overlay.png",
                                  "prediction.nii.gz", "reconstruction.nii.gz", "report.json")])
  report = json.loads((out / "good_report.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"{c} in a report"))
  assert report["checkpoint_step"] == 60
  # The header's two orientations: which was used is said, and both are kept in the outputs.
  assert "disagree by up to 20.0 mm; the sform was used" in report["preprocessing_notes"][0]
  for kind in ("anomaly_map", "prediction", "brain_mask"):
    written = nib.load(out / f"good_{kind}.nii.gz")
    assert (int(written.header["sform_code"]), int(written.header["qform_code"])) == (2, 1)
    np.testing.assert_allclose(written.header.get_qform(), qform, atol=1e-4)
  summary = (out / "summary.csv").read_text()
  assert summary.count(",skipped,") == len(reasons) and summary.count(",done,") == 1


def test_a_scan_stopped_while_writing_leaves_none_of_its_outputs(vae_smoke_run, good_scan,
                                                                 tmp_path, monkeypatch):
  """Ctrl-C after the maps are written: none of them under a final name (a full disk: below)."""
  from brainseg_jax import figures
  from brainseg_jax import predict as predict_lib

  def fail(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(figures, "save_overlay", fail)
  with pytest.raises(KeyboardInterrupt):
    predict_lib.predict(str(vae_smoke_run[0]), str(good_scan), str(tmp_path))
  assert list(tmp_path.iterdir()) == []


def test_a_full_disk_skips_the_scan_the_folder_goes_on_and_leftovers_are_removed(
    vae_smoke_run, good_scan, tmp_path, monkeypatch):
  from brainseg_jax import figures
  from brainseg_jax import predict as predict_lib
  from tests.test_workdir import _dead_pid

  folder = tmp_path / "scans"
  folder.mkdir()
  for name in ("a", "b"):
    (folder / f"{name}.nii.gz").write_bytes(good_scan.read_bytes())
  out = tmp_path / "out"
  out.mkdir()
  left = out / f".b_prediction.nii.gz.{_dead_pid()}.k2j3.tmp.nii.gz"  # a killed run's
  writing = out / f".b_anomaly_map.nii.gz.{os.getpid()}.x9q1.tmp.nii.gz"  # a live process's
  for path in (left, writing):
    path.write_bytes(b"half")
  save_overlay = figures.save_overlay

  def full_for_a(path, *args, **kwargs):
    if "/.a_overlay.png." in path:
      raise OSError(28, "No space left on device", path)
    return save_overlay(path, *args, **kwargs)

  monkeypatch.setattr(figures, "save_overlay", full_for_a)
  results = predict_lib.predict(str(vae_smoke_run[0]), str(folder), str(out))
  assert list(results) == [str(folder / "b.nii.gz")]
  assert not list(out.glob("a_*")) and len(list(out.glob("b_*"))) == 6
  assert not left.exists() and writing.exists()
  writing.unlink()
  assert not list(out.glob(".*"))
  assert "No space left on device" in (out / "summary.csv").read_text()


def _copy_run(vae_smoke_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(vae_smoke_run[0], workdir)
  return workdir


def _set_metrics_step(workdir, step):
  metrics = json.loads((workdir / "metrics.json").read_text())
  metrics["checkpoint_step"] = step
  (workdir / "metrics.json").write_text(json.dumps(metrics))


def test_the_threshold_scores_only_with_the_checkpoint_it_was_set_on(vae_smoke_run, good_scan,
                                                                     tmp_path):
  """A run trained on after its evaluation (or still training) has newer checkpoints."""
  from brainseg_jax import predict as predict_lib
  from brainseg_jax.errors import UserError

  workdir = _copy_run(vae_smoke_run, tmp_path)
  _set_metrics_step(workdir, 30)  # evaluated at step 30; steps 30 and 60 are there
  predict_lib.predict(str(workdir), str(good_scan), str(tmp_path / "out"))
  report = json.loads((tmp_path / "out" / "Subj4_FL_report.json").read_text())
  assert report["checkpoint_step"] == 30
  _set_metrics_step(workdir, 45)
  with pytest.raises(UserError) as error:
    predict_lib.predict(str(workdir), str(good_scan), str(tmp_path / "out2"))
  assert str(error.value) == (
      f"the threshold of {workdir} was set on checkpoint step 45, which is no longer "
      f"there (steps: 30, 60): the run trained on; evaluate it again (python -m "
      f"brainseg_jax.eval --workdir={workdir} ...) or calibrate again")
  assert not list((tmp_path / "out2").iterdir())


def test_a_calibration_and_an_adaptive_threshold_together_are_one_error(vae_smoke_run, good_scan,
                                                                         tmp_path):
  from brainseg_jax import predict as predict_lib
  from brainseg_jax.errors import UserError

  with pytest.raises(UserError, match="--calibration and --threshold=adaptive"):
    predict_lib.predict(str(vae_smoke_run), str(good_scan), str(tmp_path / "out"),
                        calibration="site", threshold="adaptive")
  assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_checkpoint_with_non_finite_parameters_scores_nothing(vae_smoke_run, good_scan,
                                                                 tmp_path):
  import jax

  from brainseg_jax import checkpoints
  from brainseg_jax import predict as predict_lib
  from brainseg_jax.errors import UserError
  from brainseg_jax.models import create_model

  workdir = _copy_run(vae_smoke_run, tmp_path)
  config = checkpoints.saved_config(str(workdir))
  state, _ = checkpoints.restore_trained(config, str(workdir), create_model(config))
  broken = state.replace(step=90, params=jax.tree.map(lambda p: p * np.nan, state.params))
  checkpointer = checkpoints.Checkpointer(str(workdir))
  checkpointer.save(90, broken, config.to_dict())
  checkpointer.wait_until_finished()
  checkpointer.close()
  _set_metrics_step(workdir, 90)
  with pytest.raises(UserError, match=r"checkpoints/90 holds \d+ non-finite numbers"):
    predict_lib.predict(str(workdir), str(good_scan), str(tmp_path / "out"))
  assert not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("key, value, message", [
    ("residual", "bogus", "unknown eval.residual 'bogus'"),
    ("postprocess.median_filter_size", 999, "eval.postprocess.median_filter_size=999"),
    ("postprocess.min_component_size", "x", "eval.postprocess.min_component_size='x' is not"),
])
def test_a_hand_edited_saved_config_is_one_error(vae_smoke_run, good_scan, tmp_path, key, value,
                                                 message):
  """Refused before any scan is read (the command's one line: docs/failure_table.md)."""
  from brainseg_jax import predict as predict_lib
  from brainseg_jax.errors import UserError

  workdir = _copy_run(vae_smoke_run, tmp_path)
  path = workdir / "checkpoints" / "60" / "config" / "metadata"
  saved = json.loads(path.read_text())
  *parents, last = key.split(".")
  node = saved["eval"]
  for parent in parents:
    node = node[parent]
  node[last] = value
  path.write_text(json.dumps(saved))
  with pytest.raises(UserError) as error:
    predict_lib.predict(str(workdir), str(good_scan), str(tmp_path / "out"))
  assert message in str(error.value) and "\n" not in str(error.value)
