"""Whole files or none: write under a temporary name, then rename into place.

A killed process (kill -9, power loss, a full disk) must never leave a
truncated file under the final name, where a rerun, a viewer or a reader of the
results would trust it. `os.replace` is atomic within one file system, so the
temporary file is made beside the target. Every file the project writes for a
person or a rerun goes through `atomic_path`, or `file_set` for files that
belong together (a scan's maps and report: all of them or none).

Temporary names carry the writing process's id (`.<name>.<pid>.<random>.tmp<suffix>`),
so a later run can tell what a dead process left behind (`remove_stale`) from
what a live one is still writing.
"""

import contextlib
import glob
import json
import os
import re
import tempfile

# Multi-part suffixes that writers infer the format from (nib.save, np.savez, savefig).
_SUFFIXES = (".nii.gz", ".nii", ".npz", ".png", ".json", ".jsonl", ".csv", ".md")
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp(\.[A-Za-z.]+)?$")


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def temporary_path(path: str) -> str:
  """A new, empty, uniquely named file beside `path`, with `path`'s suffix and our pid."""
  directory, name = os.path.split(os.path.abspath(path))
  suffix = next((s for s in _SUFFIXES if name.endswith(s)), os.path.splitext(name)[1])
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.{os.getpid()}.",
                             suffix=f".tmp{suffix}")
  os.close(fd)
  return tmp


def _publish(tmp: str, path: str) -> None:
  os.chmod(tmp, 0o666 & ~_umask())  # the usual permissions, not mkstemp's 0600
  os.replace(tmp, path)


def _remove(paths) -> None:
  for tmp in paths:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str):
  """Yields a temporary path beside `path`; renamed onto `path` only if the block succeeds.

  The temporary name keeps `path`'s suffix (writers pick the format from it) and
  is unique, so concurrent writers never share one.
  """
  tmp = temporary_path(path)
  try:
    yield tmp
    _publish(tmp, path)
  finally:
    _remove([tmp])


class FileSet:
  """Temporary paths for several files, published together by `file_set`."""

  def __init__(self):
    self._pending: dict[str, str] = {}

  def path(self, final_path: str) -> str:
    """The temporary path to write `final_path` to."""
    if final_path not in self._pending:
      self._pending[final_path] = temporary_path(final_path)
    return self._pending[final_path]


@contextlib.contextmanager
def file_set():
  """Files that belong together appear under their final names together, or not at all.

  Every file is written to its temporary path (`FileSet.path`); only when the
  block succeeds are they renamed, one after another, each rename atomic. An
  error or an interrupt (Ctrl-C, SIGTERM turned into an exception) inside the
  block removes every temporary file and publishes none.
  """
  files = FileSet()
  try:
    yield files
    for final_path, tmp in files._pending.items():
      _publish(tmp, final_path)
  finally:
    _remove(files._pending.values())


def remove_stale(directory: str) -> list[str]:
  """Removes the temporary files in `directory` whose writing process no longer runs."""
  removed = []
  for path in glob.glob(os.path.join(directory, ".*.tmp*"), include_hidden=True):
    match = _TEMPORARY.match(os.path.basename(path))
    if match and os.path.isfile(path) and not _alive(int(match.group(1))):
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      removed.append(path)
  return removed


def _alive(pid: int) -> bool:
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # someone else's live process
  return True


def write_text(path: str, text: str) -> None:
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    f.write(text)


def write_json(path: str, payload, allow_nan: bool = False) -> None:
  """Strict JSON: a NaN or inf in `payload` is a ValueError, never a bare `NaN` in the file.

  `allow_nan` only for records whose readers are this project's (Python reads
  `NaN`): evaluation's metrics, where a metric can be undefined (AUROC of a
  volume without lesions).
  """
  text = json.dumps(payload, indent=2, sort_keys=True, default=float, allow_nan=allow_nan)
  write_text(path, text)
