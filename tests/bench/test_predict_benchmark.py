"""bench/predict_benchmark.py times the shipped model a user's predict runs by default."""

import os
import subprocess
import sys

import pytest

from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow  # a predict process on a real 1 mm scan


def test_the_shipped_model_on_a_real_scan_gives_a_page_of_stages(sample_data_dir, tmp_path):
  scan = sample_data_dir / "tcga_glioma" / "TCGA-DU-7294" / "TCGA-DU-7294_fla_bet_normalized.nii.gz"
  output = tmp_path / "page.md"
  done = subprocess.run(
      [sys.executable, "bench/predict_benchmark.py", "--model=lgg_flair_unet", f"--scans={scan}",
       f"--output={output}"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "BRAINSEG_HOME": str(tmp_path)})
  assert done.returncode == 0, done.stderr[-3000:]
  page = output.read_text()
  assert "Made by `python bench/predict_benchmark.py --model=lgg_flair_unet" in page
  assert "Model: `lgg_flair_unet (shipped)`" in page
  for stage in ("imports", "restore", "preprocess: registration", "score", "**scan total**"):
    assert f"| {stage}" in page, stage


def test_an_unknown_model_is_one_line():
  done = subprocess.run([sys.executable, "bench/predict_benchmark.py", "--model=no_such_model"],
                        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
  assert done.returncode != 0
  assert done.stderr.strip().splitlines()[-1].startswith("--model: no shipped model")
