"""The models shipped inside the package: listed, loaded with no training, finding a lesion.

The shipped models score the sample scan the project makes itself (a synthetic
FLAIR subject with a glioma, read as a DICOM series) through the predict
command (the U-Net from an installed copy, test_packaging.py); a calibration of
a shipped model goes to the user's folder, never into the package.
"""

import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from brainseg_jax import pretrained
from tests.helpers import PROJECT_ROOT, finds_the_lesion

pytestmark = pytest.mark.slow  # runs predict on every shipped model


def _command(args, home, check=True):
  result = subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT),
                               "BRAINSEG_HOME": str(home)})
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
  folder = tmp_path_factory.mktemp("sample")
  _command(["-m", "brainseg_jax.sample", f"--output_dir={folder}"], folder / "home")
  return folder


def test_at_least_the_unet_and_the_intensity_baseline_are_shipped_with_cards():
  families = {pretrained.card(name)["family"] for name in pretrained.names()}
  assert {"unet_dae", "threshold"} <= families
  for name in pretrained.names():
    info = pretrained.card(name)
    assert (PROJECT_ROOT / info["card"]).is_file(), info["card"]
    assert info["training_data"] and info["licence"] and info["summary"]
  size = sum(f.stat().st_size for f in (PROJECT_ROOT / "brainseg_jax" / "pretrained").rglob("*"))
  assert size < 20e6  # the package's size budget for weights


def test_list_models_prints_one_line_each(tmp_path):
  result = _command(["-m", "brainseg_jax.predict", "--list_models"], tmp_path)
  lines = result.stdout.strip().splitlines()
  assert [line.split(":")[0] for line in lines] == pretrained.names()


def test_the_shipped_baseline_maps_the_sample_dicom_series_and_calibrates_in_the_users_folder(
    sample, tmp_path):
  """The U-Net maps it from an installed copy (test_packaging.py)."""
  home = tmp_path / "home"
  name = "lgg_flair_threshold"
  out = tmp_path / "dicom_out"
  _command(["-m", "brainseg_jax.predict", f"--model={name}", f"--input={sample / 'dicom'}",
            f"--output_dir={out}"], home)
  stem = "AX_FLAIR_sample"
  finds_the_lesion(out / f"{stem}_prediction.nii.gz", sample / "sample_lesion.nii.gz")
  report = json.loads((out / f"{stem}_report.json").read_text())
  assert report["model"] == {"name": name, "version": pretrained.card(name)["version"]}
  assert report["package_version"] and "--model=" + name in report["command"]
  with open(out / "summary.csv") as f:
    (row,) = list(csv.DictReader(f))
  assert row["status"] == "done" and int(row["lesions"]) == len(report["lesions"])
  assert not list((PROJECT_ROOT / "brainseg_jax" / "pretrained").rglob("checkpoints"))

  healthy = tmp_path / "healthy"
  healthy.mkdir()
  (healthy / "scan.nii.gz").write_bytes((sample / "sample_flair.nii.gz").read_bytes())
  _command(["-m", "brainseg_jax.calibrate", "--model=lgg_flair_threshold",
            f"--healthy={healthy}", "--name=site"], home)
  (calibration,) = (home / "models").rglob("calibrations/site.json")
  assert json.loads(calibration.read_text())["scans"] == [str(healthy / "scan.nii.gz")]
  assert not list((PROJECT_ROOT / "brainseg_jax" / "pretrained").rglob("calibrations"))
  record = json.loads(calibration.read_text())
  assert np.isfinite(record["thresholds"]["fpr_0.01"]) and record["checkpoint_step"] == 0


def test_a_newer_packages_evaluation_replaces_the_users_copy_and_keeps_calibrations(
    tmp_path, monkeypatch):
  monkeypatch.setenv("BRAINSEG_HOME", str(tmp_path / "home"))
  name = "lgg_flair_threshold"
  copy = pretrained.workdir(name)
  shipped = (PROJECT_ROOT / "brainseg_jax" / "pretrained" / name / "metrics.json").read_text()
  # As an older package left it: its evaluation had no adaptive thresholds yet.
  old = json.loads(shipped)
  del old["protocol"]["adaptive_thresholds"]
  (pathlib.Path(copy) / "metrics.json").write_text(json.dumps(old))
  calibration = pathlib.Path(copy) / "calibrations" / "site.json"
  calibration.parent.mkdir()
  calibration.write_text("{}")
  assert pretrained.workdir(name) == copy
  assert (pathlib.Path(copy) / "metrics.json").read_text() == shipped
  assert calibration.exists()
  # A folder the user named keeps what was evaluated there.
  mine = tmp_path / "mine"
  pretrained.workdir(name, into=str(mine))
  (mine / "metrics.json").write_text(json.dumps(old))
  pretrained.workdir(name, into=str(mine))
  assert json.loads((mine / "metrics.json").read_text()) == old
