"""One run per workdir at a time; a killed run never leaves the workdir locked."""

import os
import signal
import subprocess
import sys
import time

import pytest

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


def test_temporaries_left_by_a_killed_run_are_removed_under_the_lock(tmp_path):
  (tmp_path / "figures").mkdir()
  stale = [tmp_path / ".metrics.json.x1.tmp.json", tmp_path / "figures" / ".a.png.x2.tmp.png"]
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
