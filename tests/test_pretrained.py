"""The models shipped inside the package: listed, loaded with no training, finding a lesion.

Each shipped model scores the sample scan the project makes itself (a synthetic
FLAIR subject with a glioma, read as a DICOM series) through the predict
command; a calibration of a shipped model goes to the user's folder, never
into the package.
"""

import csv
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from brainseg_jax import pretrained
from tests.helpers import PROJECT_ROOT

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


@pytest.mark.parametrize("name", pretrained.names())
def test_a_shipped_model_finds_the_lesion_of_the_sample_dicom_series(name, sample, tmp_path):
  home = tmp_path / "home"
  out = tmp_path / "out"
  _command(["-m", "brainseg_jax.predict", f"--model={name}", f"--input={sample / 'dicom'}",
            f"--output_dir={out}"], home)
  stem = "AX_FLAIR_sample"
  assert sorted(p.name for p in out.iterdir()) == sorted(
      [f"{stem}_{k}" for k in ("anomaly_map.nii.gz", "prediction.nii.gz", "brain_mask.nii.gz",
                               "reconstruction.nii.gz", "overlay.png", "report.json")]
      + ["summary.csv"])
  prediction = nib.load(out / f"{stem}_prediction.nii.gz").get_fdata() > 0
  lesion = nib.load(sample / "sample_lesion.nii.gz").get_fdata() > 0
  assert prediction.shape == lesion.shape
  assert prediction[lesion].mean() > 0.3 and prediction[lesion].mean() > 10 * prediction[
      ~lesion].mean()
  report = json.loads((out / f"{stem}_report.json").read_text())
  assert report["model"] == {"name": name, "version": pretrained.card(name)["version"]}
  assert report["package_version"] and "--model=" + name in report["command"]
  with open(out / "summary.csv") as f:
    (row,) = list(csv.DictReader(f))
  assert row["status"] == "done" and int(row["lesions"]) == len(report["lesions"])
  assert os.listdir(home / "models") and not list(
      (PROJECT_ROOT / "brainseg_jax" / "pretrained").rglob("checkpoints"))


def test_a_calibration_of_a_shipped_model_goes_to_the_users_folder(sample, tmp_path):
  home = tmp_path / "home"
  healthy = tmp_path / "healthy"
  healthy.mkdir()
  (healthy / "scan.nii.gz").write_bytes((sample / "sample_flair.nii.gz").read_bytes())
  _command(["-m", "brainseg_jax.calibrate", "--model=lgg_flair_threshold",
            f"--healthy={healthy}", "--name=site"], home)
  (calibration,) = (home / "models").rglob("calibrations/site.json")
  assert json.loads(calibration.read_text())["scans"] == [str(healthy / "scan.nii.gz")]
  assert not list((PROJECT_ROOT / "brainseg_jax" / "pretrained").rglob("calibrations"))
  _command(["-m", "brainseg_jax.predict", "--model=lgg_flair_threshold",
            f"--input={sample / 'sample_flair.nii.gz'}", f"--output_dir={tmp_path / 'out'}",
            "--calibration=site"], home)
  report = json.loads((tmp_path / "out" / "sample_flair_report.json").read_text())
  assert report["threshold_source"].startswith("calibration 'site'")
  assert np.isfinite(report["threshold"])
