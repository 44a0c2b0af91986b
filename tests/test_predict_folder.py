"""predict over a folder: a summary row per scan, progress, resume after a kill, signals."""

import json
import os
import time

import pytest

pytestmark = pytest.mark.slow  # runs predict


@pytest.fixture(scope="module")
def good_scan(sample_data_dir):
  """An elderly FLAIR scan (skull on, 2 mm) that passes registration QC: quick to predict."""
  return sample_data_dir / "elderly_flair" / "flair" / "Subj2_FL.nii.gz"


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
  for name in ("a", "b", "c"):
    (folder / f"{name}.nii.gz").write_bytes(good_scan.read_bytes())
  (folder / "d_broken.nii.gz").write_bytes(good_scan.read_bytes()[:3000])
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
  assert f"{len(done_before)} of 4 scans already done" in stderr
  todo = 4 - len(done_before)
  assert f"scan 1 of {todo} (" in stderr and "s a scan, about" in stderr
  assert f"scan {todo} of {todo} (" in stderr
  assert (out / "a_report.json").stat().st_mtime_ns == first  # not done twice
  summary = _summary(out)
  assert {name: row["status"] for name, row in summary.items()} == {
      "a.nii.gz": "done (earlier run)",
      "b.nii.gz": "done (earlier run)" if "b_report.json" in done_before else "done",
      "c.nii.gz": "done", "d_broken.nii.gz": "skipped"}
  assert "truncated or corrupt" in summary["d_broken.nii.gz"]["reason"]
  report = json.loads((out / "c_report.json").read_text())
  row = summary["c.nii.gz"]
  assert row["registration_qc"] == "passed" and int(row["lesions"]) == len(report["lesions"])
  assert float(row["threshold"]) == pytest.approx(report["threshold"], rel=1e-5)
  assert float(row["brain_fraction_flagged"]) == pytest.approx(
      report["brain_fraction_flagged"], abs=1e-5)
  assert float(row["total_lesion_ml"]) == pytest.approx(report["total_lesion_volume_ml"],
                                                        abs=0.01)
  assert not list(out.glob(".*"))  # what the killed run left was removed

  again = _start_predict([*args, "--overwrite"], home)
  _, stderr = again.communicate(timeout=900)
  assert again.returncode == 0 and "3 of 4 scans done, 1 skipped" in stderr
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
