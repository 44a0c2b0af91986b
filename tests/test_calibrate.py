"""Calibration on a new site's healthy scans: thresholds stored by name, no lesion mask read."""

import json
import shutil

import nibabel as nib
import pytest

from brainseg_jax import calibrate
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.errors import UserError
from configs import threshold as threshold_config
from data_prep import load
from tests.helpers import run

pytestmark = pytest.mark.slow  # registers real scans


@pytest.fixture(scope="module")
def site_folder(sample_data_dir, tmp_path_factory):
  """One healthy-looking elderly FLAIR scan, with a lesion mask folder beside it (never read)."""
  folder = tmp_path_factory.mktemp("site")
  shutil.copy(sample_data_dir / "elderly_flair" / "flair" / "Subj4_FL.nii.gz", folder)
  (folder / "lesion_masks").mkdir()
  shutil.copy(sample_data_dir / "elderly_flair" / "wmh" / "Subj4_FL_DLWMLS.nii.gz",
              folder / "lesion_masks")
  return folder


def test_calibration_is_stored_by_name_and_reads_no_lesion_mask(vae_smoke_run, site_folder,
                                                                tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  shutil.copytree(vae_smoke_run[0], workdir, ignore=shutil.ignore_patterns("nifti", "figures"))
  read = []
  for name in ("load_volume", "load_mask"):
    original = getattr(load, name)
    monkeypatch.setattr(load, name, lambda path, *a, _f=original, **k: (read.append(str(path)),
                                                                        _f(path, *a, **k))[1])
  record = calibrate.calibrate(str(workdir), str(site_folder), "site_a")
  assert read == [str(site_folder / "Subj4_FL.nii.gz")]
  assert record["scans"] == read and record["healthy_fprs"] == [0.01, 0.05, 0.1]
  stored = json.loads((workdir / "calibrations" / "site_a.json").read_text())
  assert stored["thresholds"] == record["thresholds"]
  # Looser healthy false-positive rates give lower thresholds.
  values = [stored["thresholds"][k] for k in ("fpr_0.01", "fpr_0.05", "fpr_0.1")]
  assert values == sorted(values, reverse=True)
  threshold = workdir_lib.calibration_threshold(str(workdir), "site_a")
  assert threshold.value == values[0] and "calibration 'site_a'" in threshold.source
  # The model's own threshold is untouched.
  assert workdir_lib.model_threshold(str(workdir)).value == json.loads(
      (vae_smoke_run[0] / "metrics.json").read_text())["protocol"]["threshold"]


def test_a_scan_failing_registration_qc_is_left_out_with_its_reason(vae_smoke_run, site_folder,
                                                                    sample_data_dir, tmp_path):
  """A 6 cm slab of Subj4's head (its lowest 30 axial slices) covers about a quarter of the
  template brain however it is registered: registration QC fails it."""
  workdir = tmp_path / "run"
  shutil.copytree(vae_smoke_run[0], workdir, ignore=shutil.ignore_patterns("nifti", "figures"))
  folder = tmp_path / "site"
  shutil.copytree(site_folder, folder)
  scan = nib.load(sample_data_dir / "elderly_flair" / "flair" / "Subj4_FL.nii.gz")
  axial = nib.io_orientation(scan.affine)[:, 0].tolist().index(2)  # the voxel axis along S/I
  keep = [slice(None)] * 3
  keep[axial] = slice(0, 30)
  slab = folder / "slab_FL.nii.gz"
  nib.save(scan.slicer[tuple(keep)], slab)
  # One thread: registration on several is not bit-reproducible (data_prep.pipeline).
  record = calibrate.calibrate(str(workdir), str(folder), "site_b", threads=1)
  assert record["scans"] == [str(folder / "Subj4_FL.nii.gz")]
  assert "registration QC failed" in record["skipped"][str(slab)]
  assert "covers" in record["skipped"][str(slab)]


def test_an_unknown_calibration_name_is_a_clear_error(vae_smoke_run):
  with pytest.raises(UserError, match="no calibration 'nope'"):
    workdir_lib.calibration_threshold(str(vae_smoke_run[0]), "nope")
  with pytest.raises(UserError, match="calibration name"):
    workdir_lib.calibration_path(str(vae_smoke_run[0]), "../escape")


@pytest.mark.parametrize("make, message", [
    (lambda folder: None, "no scans in"),
    (lambda folder: (folder / "bad.nii.gz").write_bytes(b"not a nifti"),
     "bad.nii.gz: not a readable NIfTI file"),
    (lambda folder: (folder / "flat.nii.gz").write_bytes(
        __import__("gzip").compress(b"\x00" * 400)), "flat.nii.gz"),
])
def test_bad_healthy_folders_end_with_one_line_naming_the_file(vae_smoke_run, tmp_path, make,
                                                               message):
  folder = tmp_path / "healthy"
  folder.mkdir()
  make(folder)
  result = run(["-m", "brainseg_jax.calibrate", f"--workdir={vae_smoke_run[0]}",
                f"--healthy={folder}", "--name=bad"], None, check=False)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert message in lines[-1] and lines[-1].startswith("error:"), result.stderr
  assert "Traceback" not in result.stderr


def test_a_model_of_several_modalities_is_refused_in_one_line(tmp_path):
  """calibrate reads one scan per subject; a FLAIR+T1+T1c model needs three: said up front."""
  config = threshold_config.get_config()
  config.dataset.modalities = ("flair", "t1", "t1c")
  (tmp_path / workdir_lib.EVALUATED_CONFIG_FILE).write_text(json.dumps(config.to_dict()))
  (tmp_path / "healthy").mkdir()
  (tmp_path / "healthy" / "scan.nii.gz").write_bytes(b"")
  with pytest.raises(UserError, match="takes 3 modalities as channels"):
    calibrate.calibrate(str(tmp_path), str(tmp_path / "healthy"), "site")
