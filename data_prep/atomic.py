"""Whole files or none: write under a temporary name, then rename into place.

A killed process (kill -9, power loss, a full disk) must never leave a
truncated file under the final name, where a rerun, a viewer or a reader of the
results would trust it. `os.replace` is atomic within one file system, so the
temporary file is made beside the target. Every file the project writes for a
person or a rerun goes through `atomic_path`.
"""

import contextlib
import json
import os
import tempfile

# Multi-part suffixes that writers infer the format from (nib.save, np.savez, savefig).
_SUFFIXES = (".nii.gz", ".nii", ".npz", ".png", ".json", ".jsonl", ".csv", ".md")


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_path(path: str):
  """Yields a temporary path beside `path`; renamed onto `path` only if the block succeeds.

  The temporary name keeps `path`'s suffix (writers pick the format from it) and
  is unique, so concurrent writers never share one. The file gets the usual
  permissions (0666 minus the umask), not mkstemp's 0600.
  """
  directory, name = os.path.split(os.path.abspath(path))
  suffix = next((s for s in _SUFFIXES if name.endswith(s)), os.path.splitext(name)[1])
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=f".tmp{suffix}")
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    f.write(text)


def write_json(path: str, payload) -> None:
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True, default=float)
