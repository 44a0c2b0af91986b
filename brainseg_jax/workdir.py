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
