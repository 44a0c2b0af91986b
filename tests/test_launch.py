"""End to end through the command lines a user types, with the smoke configs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import PROJECT_ROOT, run

pytestmark = pytest.mark.slow  # each test runs launch.py


def test_launch_trains_then_evaluates(vae_smoke_run):
  workdir, result, seconds = vae_smoke_run
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert metrics["checkpoint_step"] == 60
  assert set(metrics["pooled"]) == {"all", "ms", "glioma"}
  pooled = metrics["pooled"]["all"]
  for key in ("dice", "sensitivity", "precision", "accuracy", "auroc", "auprc",
              "best_dice_upper_bound"):
    assert 0.0 <= pooled[key] <= 1.0, key
  assert pooled["best_dice_upper_bound"] >= pooled["dice"]
  # Even a 60-step model ranks anomalous voxels above healthy ones.
  assert pooled["auroc"] > 0.6
  assert len(metrics["per_volume"]) == 10
  assert metrics["protocol"]["threshold_source"].startswith("validation")
  assert (workdir / "anomaly_maps.png").stat().st_size > 10_000
  assert (workdir / "roc_pr.png").stat().st_size > 10_000
  assert len(list((workdir / "figures").glob("*.png"))) == 10
  assert len((workdir / "per_volume.csv").read_text().splitlines()) == 11
  assert "| all (10) | healthy FPR 0.05 |" in (workdir / "summary.md").read_text()
  for fpr in ("fpr_0.01", "fpr_0.05", "fpr_0.1"):
    assert 0 <= pooled[fpr]["dice"] <= 1 and 0 <= pooled[fpr]["lesion_sensitivity"] <= 1
  # looser thresholds flag more: sensitivity grows with the false-positive rate
  assert pooled["fpr_0.01"]["sensitivity"] <= pooled["fpr_0.05"]["sensitivity"] <= \
      pooled["fpr_0.1"]["sensitivity"]
  assert 0 <= pooled["slice_auroc"] <= 1
  assert list((workdir / "tensorboard").iterdir())
  log = [json.loads(line) for line in (workdir / "train_log.jsonl").read_text().splitlines()]
  assert log[-1]["step"] == 60 and "steps_per_sec" in log[-1]
  print(f"vae smoke: {seconds:.0f} s, pooled Dice {pooled['dice']:.3f}")


def test_nifti_maps_are_written_on_the_volume_grid(vae_smoke_run):
  import nibabel as nib
  import numpy as np

  from data_prep import grid
  workdir, _, _ = vae_smoke_run
  shape, spacing = grid.grid_geometry(64)
  for name in ("anomaly_map", "prediction", "reconstruction"):
    image = nib.load(workdir / "nifti" / f"test_001_glioma_{name}.nii.gz")
    assert image.shape == shape
    np.testing.assert_allclose(nib.affines.voxel_sizes(image.affine), spacing)
  prediction = np.asarray(nib.load(workdir / "nifti" / "test_001_glioma_prediction.nii.gz")
                          .dataobj)
  assert set(np.unique(prediction)) <= {0, 1}


def test_eval_command_reproduces_the_metrics(vae_smoke_run, data_dir):
  workdir, _, _ = vae_smoke_run
  before = json.loads((workdir / "metrics.json").read_text())
  run(["-m", "brainseg_jax.eval", "--config=configs/vae.py:smoke", f"--workdir={workdir}"],
      data_dir)
  after = json.loads((workdir / "metrics.json").read_text())
  assert after["pooled"] == before["pooled"]


def test_interrupted_launch_says_so_in_one_line_and_resumes_from_its_last_checkpoint(
    tmp_path, data_dir):
  """Ctrl-C during training (bench/fault_run.py kills at random moments with SIGKILL)."""
  args = [sys.executable, "launch.py", "--config=configs/ae.py:smoke", f"--workdir={tmp_path}",
          "--config.num_train_steps=120", "--config.checkpoint_every_steps=20",
          f"--config.dataset.data_dir={data_dir}"]
  process = subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
  checkpoint = tmp_path / "checkpoints" / "20"
  deadline = time.time() + 240
  while not checkpoint.is_dir() and time.time() < deadline and process.poll() is None:
    time.sleep(0.2)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert checkpoint.is_dir(), "no checkpoint appeared before the interrupt"
  assert process.returncode == 130, stderr[-2000:]
  assert stderr.strip().splitlines()[-1] == ("error: interrupted (Ctrl-C): stopped; nothing "
                                             "further was written")
  assert "Traceback" not in stderr
  result = run(["launch.py", "--config=configs/ae.py:smoke", f"--workdir={tmp_path}",
                "--config.num_train_steps=120", "--config.checkpoint_every_steps=20"], data_dir)
  assert "resumed from step" in result.stderr
  resumed_from = int(result.stderr.split("resumed from step ")[1].split()[0])
  assert 20 <= resumed_from < 120
  assert json.loads((tmp_path / "metrics.json").read_text())["checkpoint_step"] == 120


@pytest.mark.parametrize("args, message", [
    (["launch.py", "--config=configs/vae.py:smoke", "--config.no_such_key=1"], "no_such_key"),
    (["launch.py", "--config=configs/vae.py:smoke", "--config.batch_size=6"],
     "batch_size 6 is not divisible by the 4 devices"),
    (["launch.py", "--config=configs/vae.py:smoke", "--config.dataset.resolution=36"],
     "not divisible by 2^3 = 8"),
    (["launch.py", "--config=configs/vae.py:smoke", "--config.model.name=gan"],
     "unknown model.name 'gan'"),
    (["launch.py", "--config=configs/vae.py:smoke", "--config.warmup_steps=500"],
     "warmup_steps 500 must be in [0, num_train_steps = 60)"),
    (["launch.py", "--config=configs/no_such_config.py"], "No such file or directory"),
    (["launch.py", "--config=configs/vae.py:fast"], "unknown config variant 'fast'"),
])
def test_bad_config_is_a_one_line_error(args, message, tmp_path, data_dir):
  result = run([*args, f"--workdir={tmp_path}"], data_dir, check=False)
  assert result.returncode == 1
  assert message in result.stderr
  assert "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_eval_on_empty_workdir_says_train_first(tmp_path, data_dir):
  result = run(["-m", "brainseg_jax.eval", "--config=configs/vae.py:smoke",
                f"--workdir={tmp_path}"], data_dir, check=False)
  assert result.returncode == 1
  assert "no checkpoints in" in result.stderr and "train first" in result.stderr
  assert "Traceback" not in result.stderr


def test_eval_on_corrupt_checkpoint_names_it(vae_smoke_run, tmp_path, data_dir):
  import shutil
  workdir, _, _ = vae_smoke_run
  copy = tmp_path / "run"
  shutil.copytree(workdir / "checkpoints", copy / "checkpoints")
  for path in (copy / "checkpoints" / "60" / "state").rglob("*"):
    if path.is_file() and path.stat().st_size > 1000:
      path.write_bytes(path.read_bytes()[:100])  # truncate the array data
  result = run(["-m", "brainseg_jax.eval", "--config=configs/vae.py:smoke",
                f"--workdir={copy}"], data_dir, check=False)
  assert result.returncode == 1
  assert "cannot be restored" in result.stderr and str(copy) in result.stderr
  assert "Traceback" not in result.stderr


def test_unwritable_workdir_is_a_one_line_error(tmp_path, data_dir):
  blocker = tmp_path / "file"
  blocker.write_text("")
  result = run(["launch.py", "--config=configs/vae.py:smoke", f"--workdir={blocker}/run"],
               data_dir, check=False)
  assert result.returncode == 1 and "is not writable" in result.stderr
