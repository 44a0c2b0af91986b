"""One run per workdir at a time; a killed run never leaves the workdir locked."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from brainseg_jax import adaptive
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.errors import UserError
from tests.helpers import PROJECT_ROOT, run

_HOLD_LOCK = ("import sys, time; from brainseg_jax import workdir as w\n"
              "with w.exclusive(sys.argv[1]):\n  print('locked', flush=True); time.sleep(600)")


def _holder(workdir):
  process = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(workdir)], cwd=PROJECT_ROOT,
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
  assert process.stdout.readline().strip() == "locked"
  return process


def test_a_workdir_in_use_is_refused_naming_the_process(tmp_path):
  holder = _holder(tmp_path)
  try:
    with pytest.raises(UserError, match=f"in use by process {holder.pid}"), \
        workdir_lib.exclusive(str(tmp_path)):
      pass
  finally:
    holder.kill()
    holder.wait()


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path):
  holder = _holder(tmp_path)
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  with workdir_lib.exclusive(str(tmp_path)):
    assert (tmp_path / workdir_lib.LOCK_FILE).read_text() == str(os.getpid())


def _dead_pid() -> int:
  process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
  return int(process.stdout)


def test_temporaries_left_by_a_killed_run_are_removed_under_the_lock(tmp_path):
  (tmp_path / "figures").mkdir()
  dead = _dead_pid()
  stale = [tmp_path / f".metrics.json.{dead}.x1.tmp.json",
           tmp_path / "figures" / f".a.png.{dead}.x2.tmp.png"]
  for path in stale:
    path.write_text("half")
  (tmp_path / "keep.png").write_text("complete")
  with workdir_lib.exclusive(str(tmp_path)):
    assert not any(path.exists() for path in stale)
  assert (tmp_path / "keep.png").exists()


@pytest.mark.slow
def test_second_launch_on_a_busy_workdir_stops_at_once_and_touches_nothing(tmp_path, data_dir):
  holder = _holder(tmp_path)
  try:
    start = time.time()
    result = run(["launch.py", "--config=configs/vae.py:smoke", f"--workdir={tmp_path}"],
                 data_dir, check=False)
    assert result.returncode == 1, result.stderr
    assert f"in use by process {holder.pid}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "checkpoints").exists()
    print(f"refused in {time.time() - start:.1f} s")
  finally:
    holder.kill()
    holder.wait()


def test_output_dir_that_is_a_file_is_named(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(UserError, match="is a file, not a directory"):
    workdir_lib.ensure_writable(str(blocker), "--output_dir")
  with pytest.raises(UserError, match="is not writable"):
    workdir_lib.ensure_writable(str(blocker / "below"), "--output_dir")


def _metrics_with(tmp_path, **protocol):
  protocol = {"threshold": 0.3, "healthy_fpr": 0.01, "threshold_source": "test", **protocol}
  (tmp_path / "metrics.json").write_text(json.dumps({"protocol": protocol,
                                                     "checkpoint_step": 60}))
  return str(tmp_path)


def test_the_model_threshold_is_read_from_the_metrics(tmp_path):
  threshold = workdir_lib.model_threshold(_metrics_with(tmp_path))
  assert (threshold.value, threshold.healthy_fpr, threshold.checkpoint_step) == (0.3, 0.01, 60)


def test_the_adaptive_threshold_is_each_scans_own(tmp_path):
  threshold = workdir_lib.adaptive_threshold(
      _metrics_with(tmp_path, adaptive_thresholds={"adaptive_fpr_0.01": 4.0}))
  assert threshold.adaptive and threshold.value == 4.0
  scores = np.concatenate([np.zeros(500), np.linspace(0, 1, 500)])
  scan = threshold.for_scan(scores)
  assert not scan.adaptive and scan.checkpoint_step == 60
  assert scan.value == pytest.approx(adaptive.scan_threshold(scores, 4.0))
  assert threshold.for_scan(2 * scores).value == pytest.approx(2 * scan.value)
  fixed = workdir_lib.model_threshold(str(tmp_path))
  assert fixed.for_scan(scores) is fixed


def test_a_run_evaluated_before_adaptive_thresholds_is_told_to_evaluate_again(tmp_path):
  with pytest.raises(UserError, match="has no adaptive threshold .* evaluate again"):
    workdir_lib.adaptive_threshold(_metrics_with(tmp_path))


@pytest.mark.parametrize("edit, message", [
    ({"threshold": float("nan")}, "protocol.threshold is nan, not a finite threshold"),
    ({"threshold": float("inf")}, "protocol.threshold is inf, not a finite threshold"),
    ({"threshold": -0.5}, "protocol.threshold is -0.5, not a finite threshold >= 0"),
    ({"threshold": "0.3"}, "protocol.threshold is '0.3'"),
    ({"threshold": None}, "protocol.threshold is None"),
    ({"healthy_fpr": 1.5}, "protocol.healthy_fpr is 1.5, not a fraction"),
])
def test_an_edited_model_threshold_is_one_error_naming_the_file_and_key(tmp_path, edit, message):
  with pytest.raises(UserError, match=re.escape(message)):
    workdir_lib.model_threshold(_metrics_with(tmp_path, **edit))


@pytest.mark.parametrize("content, message", [
    ('{"protocol": {"thresh', "cannot be read"),  # truncated
    ('{"model": "vae"}', "protocol is None"),
])
def test_a_broken_metrics_file_is_one_error(tmp_path, content, message):
  (tmp_path / "metrics.json").write_text(content)
  with pytest.raises(UserError, match=message):
    workdir_lib.model_threshold(str(tmp_path))


def _calibration_with(tmp_path, **edits):
  record = workdir_lib.calibration_record("site", "/scans", ["/scans/a.nii.gz"], {},
                                         {0.01: 0.4, 0.05: 0.2}, 1000, "now", 60)
  workdir_lib.save_calibration(str(tmp_path), record)
  if edits:  # by hand, as a user would (the project writes strict JSON only)
    path = workdir_lib.calibration_path(str(tmp_path), "site")
    with open(path, "w") as f:
      json.dump({**record, **edits}, f)
  return str(tmp_path)


def test_a_calibration_threshold_round_trips(tmp_path):
  threshold = workdir_lib.calibration_threshold(_calibration_with(tmp_path), "site")
  assert (threshold.value, threshold.healthy_fpr, threshold.checkpoint_step) == (0.4, 0.01, 60)
  assert "1 healthy scans of /scans" in threshold.source


@pytest.mark.parametrize("edits, message", [
    ({"healthy_fprs": []}, "healthy_fprs is empty"),
    ({"healthy_fprs": [0.02]}, "thresholds.fpr_0.02 is None"),
    ({"thresholds": {"fpr_0.01": float("nan")}}, "thresholds.fpr_0.01 is nan"),
    ({"thresholds": "x"}, "thresholds is 'x'"),
    ({"checkpoint_step": None}, "checkpoint_step is None"),
    ({"checkpoint_step": -3}, "checkpoint_step is -3"),
])
def test_an_edited_calibration_is_one_error_naming_the_file_and_key(tmp_path, edits, message):
  with pytest.raises(UserError, match=re.escape(message)):
    workdir_lib.calibration_threshold(_calibration_with(tmp_path, **edits), "site")
