"""The run's working directory: checked writable before any work starts, used by one run at once.

Two runs writing the same checkpoints and outputs would corrupt both, so
training and evaluation hold an exclusive lock on the workdir (`exclusive`).
The lock is an `fcntl.flock` on `WORKDIR/.lock`: the kernel releases it when
its process ends, however it ends, so a killed run never leaves it stuck.
"""

import contextlib
import fcntl
import glob
import json
import os
import tempfile

import jax

from brainseg_jax.errors import UserError
from data_prep import atomic

LOCK_FILE = ".lock"


def ensure_writable(directory: str, what: str = "workdir") -> str:
  """Creates `directory` if needed and proves it can be written; returns its absolute path."""
  path = os.path.abspath(directory)
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
      pass
  except FileExistsError as e:
    raise UserError(f"{what} {path} is a file, not a directory") from e
  except OSError as e:
    raise UserError(f"{what} {path} is not writable: {e.strerror or e}") from e
  return path


@contextlib.contextmanager
def exclusive(workdir: str):
  """Holds the workdir's lock (process 0 of a multi-process run); refuses a workdir in use.

  Temporary files that a killed run left behind (`atomic` names them
  `.<name>.*.tmp*`) are removed once the lock is held: nobody else writes here.
  """
  if jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  with open(path, "a+") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise UserError(f"workdir {workdir} is in use by {_holder(lock)}: wait for it to finish, "
                      "or pass another --workdir") from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    _remove_stale_temporaries(workdir)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _holder(lock) -> str:
  lock.seek(0)
  pid = lock.read().strip()
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
  except OSError:
    command = ""
  return f"process {pid} ({command})" if command else f"process {pid or '?'}"


def _remove_stale_temporaries(workdir: str):
  for pattern in (".*.tmp*", "*/.*.tmp*"):
    for path in glob.glob(os.path.join(workdir, pattern), include_hidden=True):
      if os.path.isfile(path):
        os.remove(path)


TRAIN_TIME_FILE = "train_time.json"


def read_train_seconds(workdir: str, step: int) -> float:
  """Wall-clock training time that produced the checkpoint at `step` (0 if unknown).

  Summed over every session of a resumed run; time spent after a session's
  last checkpoint is lost work and not counted.
  """
  try:
    with open(os.path.join(workdir, TRAIN_TIME_FILE)) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return 0.0
  return float(record["seconds"]) if record.get("step") == step else 0.0


def write_train_seconds(workdir: str, step: int, seconds: float) -> None:
  atomic.write_json(os.path.join(workdir, TRAIN_TIME_FILE), {"step": step, "seconds": seconds})
