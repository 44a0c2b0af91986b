"""Evaluation outputs are whole or absent, whenever the evaluation is killed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow  # kills evaluations


def _check_complete(workdir):
  """Every output under its final name opens in full; returns how many there are."""
  count = 0
  for path in workdir.rglob("*"):
    if not path.is_file() or path.name.startswith(".") or "checkpoints" in path.parts:
      continue
    if path.suffix == ".png":
      with Image.open(path) as image:
        image.load()  # decodes every byte: a truncated PNG raises here
    elif path.suffix == ".json":
      json.loads(path.read_text())
    elif path.name.endswith(".nii.gz"):
      assert np.isfinite(np.asarray(nib.load(path).dataobj)).all()
    elif path.name in ("summary.md", "per_volume.csv"):
      assert path.read_text().endswith("\n")
    count += 1
  return count


@pytest.mark.parametrize("outputs_before_kill", [1, 12, 25])
def test_kill_during_evaluation_leaves_only_complete_outputs(vae_smoke_run, tmp_path, data_dir,
                                                             outputs_before_kill):
  """Kills eval once `outputs_before_kill` new files exist: at figures, NIfTI, or the end."""
  workdir = tmp_path / "run"
  shutil.copytree(vae_smoke_run[0] / "checkpoints", workdir / "checkpoints")
  args = [sys.executable, "-m", "brainseg_jax.eval", "--config=configs/vae.py:smoke",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}"]
  process = subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
  deadline = time.time() + 300
  while process.poll() is None and time.time() < deadline:
    written = [p for p in workdir.rglob("*") if p.is_file() and p.suffix in (".png", ".gz")]
    if len(written) >= outputs_before_kill:
      break
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  complete = _check_complete(workdir)
  assert complete >= outputs_before_kill - 1
  # Evaluating again finishes the job and clears the killed run's temporaries.
  subprocess.run(args, cwd=PROJECT_ROOT, check=True, capture_output=True,
                 env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
  assert not [p for p in workdir.rglob(".*.tmp*")]
  assert _check_complete(workdir) >= 3 + 10 + 30  # json/csv/md, figures, NIfTI maps
  ours = json.loads((workdir / "metrics.json").read_text())
  reference = json.loads((vae_smoke_run[0] / "metrics.json").read_text())
  assert ours["pooled"] == reference["pooled"]
