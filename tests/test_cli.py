"""The runner every command goes through: however a command ends, the user sees one line.

exit 1: the user's error; 2: a bug, with its traceback in a named log file;
130: Ctrl-C; 143: SIGTERM. Each case runs a real command line in a fresh process.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import PROJECT_ROOT

# A command whose body is argv[1]; it has the device flags, like predict and calibrate.
_COMMAND = """
import errno, sys, time
from absl import flags
from brainseg_jax import cli

source = sys.argv.pop(1)

def body():
  exec(source)

cli.define_device_flags()
cli.run(body)
"""


def _start(body: str, *flags: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-c", _COMMAND, body, *flags], cwd=PROJECT_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})


def _run(body: str, *flags: str):
  process = _start(body, *flags)
  _, stderr = process.communicate(timeout=120)
  return process.returncode, stderr.strip().splitlines()


def test_a_bug_is_one_line_exit_2_and_its_traceback_is_in_the_named_file():
  status, lines = _run("raise RuntimeError('an invariant broke')")
  assert status == 2 and len(lines) == 1, lines
  assert lines[0].startswith("error: internal error, a bug in brainseg_jax "
                             "(RuntimeError: an invariant broke); the traceback is in ")
  log = re.search(r"the traceback is in (\S+);", lines[0]).group(1)
  text = open(log).read()
  os.remove(log)
  assert "Traceback" in text and "an invariant broke" in text


@pytest.mark.parametrize("body, message", [
    ("raise OSError(errno.ENOSPC, 'No space left on device', '/out/a.nii.gz')",
     "error: cannot write /out/a.nii.gz: No space left on device"),
    ("raise PermissionError(errno.EACCES, 'Permission denied', '/out')",
     "error: cannot write /out: Permission denied"),
    ("raise MemoryError()", "error: out of memory: the input or the config needs more"),
])
def test_what_the_machine_refuses_is_the_users_one_line(body, message):
  status, lines = _run(body)
  assert status == 1 and len(lines) == 1 and lines[0].startswith(message), lines


def test_ctrl_c_is_one_line_and_exit_130():
  status, lines = _run("raise KeyboardInterrupt")
  assert (status, lines) == (130, ["error: interrupted (Ctrl-C): stopped; nothing further "
                                   "was written"])


@pytest.mark.parametrize("signum, status, word", [(signal.SIGINT, 130, "interrupted"),
                                                   (signal.SIGTERM, 143, "terminated")])
def test_a_signal_during_work_is_one_line_and_runs_the_cleanup(tmp_path, signum, status, word):
  marker = tmp_path / "cleaned"
  process = _start("try:\n  print('working', flush=True); time.sleep(60)\n"
                   f"finally:\n  open({str(marker)!r}, 'w').close()")
  assert process.stdout.readline().strip() == "working"
  time.sleep(0.2)
  process.send_signal(signum)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == status, stderr
  assert len(stderr.strip().splitlines()) == 1 and word in stderr, stderr
  assert marker.exists()  # `finally` blocks ran: temporary files are removed


def test_zero_devices_is_one_line():
  status, lines = _run("pass", "--cpu_devices=0")
  assert (status, lines) == (1, ["error: --cpu_devices=0: expected at least 1"])
