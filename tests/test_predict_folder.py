"""predict over a folder: a summary row per scan, progress, resume after a kill, signals."""

import json
import os
import time

import pytest

pytestmark = pytest.mark.slow  # runs predict


@pytest.fixture(scope="module")
def good_scan(sample_data_dir):
  """An elderly FLAIR scan (skull on, 2 mm) that passes registration QC: quick to predict."""
  return sample_data_dir / "elderly_flair" / "flair" / "Subj4_FL.nii.gz"


def _start_predict(args, home):
  import subprocess
  import sys

  from tests.helpers import PROJECT_ROOT

  return subprocess.Popen([sys.executable, "-m", "brainseg_jax.predict", *args],
                          cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT),
                                          "BRAINSEG_HOME": str(home)})


def _summary(out):
  import csv

  with open(out / "summary.csv") as f:
    return {os.path.basename(row["scan"]): row for row in csv.DictReader(f)}


def test_a_killed_folder_run_resumes_without_doing_a_scan_twice(good_scan, tmp_path):
  folder = tmp_path / "scans"
  folder.mkdir()
  for name in ("a", "b"):
    (folder / f"{name}.nii.gz").write_bytes(good_scan.read_bytes())
  (folder / "c_broken.nii.gz").write_bytes(good_scan.read_bytes()[:3000])
  out, home = tmp_path / "out", tmp_path / "home"
  args = ["--model=lgg_flair_threshold", f"--input={folder}", f"--output_dir={out}"]
  process = _start_predict(args, home)
  deadline = time.time() + 600
  while not (out / "a_report.json").exists() and time.time() < deadline:
    time.sleep(0.2)
  process.kill()  # SIGKILL: no cleanup runs
  process.communicate()
  first = (out / "a_report.json").stat().st_mtime_ns
  done_before = {p.name for p in out.glob("*_report.json")}

  result = _start_predict(args, home)
  _, stderr = result.communicate(timeout=900)
  assert result.returncode == 0, stderr[-3000:]
  assert f"{len(done_before)} of 3 scans already done" in stderr
  todo = 3 - len(done_before)
  assert f"scan 1 of {todo} (" in stderr and "s a scan, about" in stderr
  assert f"scan {todo} of {todo} (" in stderr
  assert (out / "a_report.json").stat().st_mtime_ns == first  # not done twice
  summary = _summary(out)
  assert done_before == {"a_report.json"}, done_before  # killed during b
  assert {name: row["status"] for name, row in summary.items()} == {
      "a.nii.gz": "done (earlier run)", "b.nii.gz": "done", "c_broken.nii.gz": "skipped"}
  assert "truncated or corrupt" in summary["c_broken.nii.gz"]["reason"]
  report = json.loads((out / "b_report.json").read_text())
  row = summary["b.nii.gz"]
  assert row["registration_qc"] == "passed" and int(row["lesions"]) == len(report["lesions"])
  assert float(row["threshold"]) == pytest.approx(report["threshold"], rel=1e-5)
  assert float(row["brain_fraction_flagged"]) == pytest.approx(
      report["brain_fraction_flagged"], abs=1e-5)
  assert float(row["total_lesion_ml"]) == pytest.approx(report["total_lesion_volume_ml"],
                                                        abs=0.01)
  assert not list(out.glob(".*"))  # what the killed run left was removed

  only_a = tmp_path / "only_a"  # --overwrite does a done scan again (a folder of one, to be quick)
  only_a.mkdir()
  (only_a / "a.nii.gz").write_bytes(good_scan.read_bytes())
  again = _start_predict(["--model=lgg_flair_threshold", f"--input={only_a}",
                          f"--output_dir={out}", "--overwrite"], home)
  _, stderr = again.communicate(timeout=900)
  assert again.returncode == 0 and "1 of 1 scans done" in stderr, stderr[-2000:]
  assert (out / "a_report.json").stat().st_mtime_ns != first


def test_sigterm_during_a_scan_is_one_line_and_leaves_none_of_its_files(good_scan, tmp_path):
  out = tmp_path / "out"
  process = _start_predict(["--model=lgg_flair_threshold", f"--input={good_scan}",
                            f"--output_dir={out}"], tmp_path / "home")
  deadline = time.time() + 300
  while not out.exists() and time.time() < deadline:  # made once the model is ready
    time.sleep(0.1)
  time.sleep(2.0)  # inside the scan's preprocessing
  process.terminate()
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 143, stderr[-2000:]
  assert stderr.strip().splitlines()[-1] == ("error: terminated (SIGTERM): stopped; nothing "
                                             "further was written")
  assert "Traceback" not in stderr
  assert list(out.iterdir()) == []


def test_a_bids_dataset_maps_into_a_bids_derivatives_layout(good_scan, tmp_path, monkeypatch):
  from brainseg_jax import predict as predict_lib

  root = tmp_path / "bids"
  (root / "dataset_description.json").parent.mkdir()
  (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
  for relative in ("sub-01/anat/sub-01_FLAIR.nii.gz", "sub-02/ses-1/anat/sub-02_ses-1_FLAIR.nii.gz",
                   "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"):  # a T1w: not for a FLAIR model
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_bytes(good_scan.read_bytes())
  out = root / "derivatives" / "brainseg"
  monkeypatch.setenv("BRAINSEG_HOME", str(tmp_path / "home"))
  results = predict_lib.predict(None, str(root), str(out), model="lgg_flair_threshold")
  assert len(results) == 2
  description = json.loads((out / "dataset_description.json").read_text())
  assert description["DatasetType"] == "derivative"
  for folder, entities in (("sub-01/anat", "sub-01"), ("sub-02/ses-1/anat", "sub-02_ses-1")):
    assert sorted(p.name for p in (out / folder).iterdir()) == sorted(
        f"{entities}_{name}" for name in (
            "desc-anomaly_FLAIR.nii.gz", "desc-reconstruction_FLAIR.nii.gz",
            "desc-lesion_mask.nii.gz", "desc-brain_mask.nii.gz", "desc-overlay_FLAIR.png",
            "desc-report_FLAIR.json"))
  assert {row["status"] for row in _summary(out).values()} == {"done"}
