"""The run's working directory: checked writable before any work starts."""

import json
import os
import tempfile

from brainseg_jax.errors import UserError


def ensure_writable(workdir: str) -> str:
  """Creates `workdir` if needed and proves it can be written; returns its absolute path."""
  path = os.path.abspath(workdir)
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
      pass
  except OSError as e:
    raise UserError(f"workdir {path} is not writable: {e.strerror or e}") from e
  return path


def write_json_atomically(path: str, payload) -> None:
  """Writes JSON to a temporary file and renames it: never a half-written file."""
  directory = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as f:
    json.dump(payload, f, indent=2, sort_keys=True, default=float)
    tmp = f.name
  os.replace(tmp, path)


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
  write_json_atomically(os.path.join(workdir, TRAIN_TIME_FILE),
                        {"step": step, "seconds": seconds})
