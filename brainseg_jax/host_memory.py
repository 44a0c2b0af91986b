"""How a training process gets its host memory from glibc's malloc (Linux).

XLA:CPU allocates each step's temporaries as one buffer per device (58 MB for
the default AE on 4 devices, 322 MB for the U-Net) and frees it at the end of
the step. Buffers that large are mmap'ed fresh by malloc every step, and the
kernel zeroes them one 4 KiB page fault at a time: 0.11 s of system time per AE
step and 0.7 s per U-Net step (1.6 s) were page faults. Two settings fix it:

- `restart_with_huge_pages`: glibc's `glibc.malloc.hugetlb=1` tunable makes
  malloc ask for transparent huge pages (`madvise`), so such a buffer faults in
  2 MiB at a time. Tunables are read when a process starts, so the entry point
  restarts itself once with the tunable set, before JAX is imported.
- `release_freed_heap`: compiling a step leaves ~130-230 MB of freed compiler
  memory in malloc's heap, which the step's buffers (mmap'ed) never reuse; handed
  back to the OS after compiling, it no longer adds to the peak.

Measured in bench/train_benchmark.py (docs/benchmarks.md, "what each change
bought"). Both do nothing where the C library is not glibc, nor when their
environment variable is set (BRAINSEG_NO_RESTART, BRAINSEG_KEEP_FREED_HEAP).
"""

import ctypes
import os
import platform
import sys

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
# Set (to anything non-empty): release_freed_heap does nothing. For benchmarks that measure
# what the release saves (bench/train_benchmark.py --undo=release_freed_heap).
KEEP_FREED_HEAP = "BRAINSEG_KEEP_FREED_HEAP"


def is_glibc() -> bool:
  return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def with_huge_pages(environ) -> dict:
  """A copy of `environ` whose GLIBC_TUNABLES also asks for huge pages (others kept)."""
  tunables = environ.get("GLIBC_TUNABLES", "")
  if HUGE_PAGES_TUNABLE in tunables.split(":"):
    return dict(environ)
  return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, HUGE_PAGES_TUNABLE]))}


def restart_with_huge_pages() -> None:
  """Replaces this process by the same command with the huge-page tunable set, once.

  Call first thing in an entry point's `__main__` (before JAX is imported, so
  the restart costs ~0.1 s). Returns without restarting when the tunable is
  already set (the restarted process, or a user who set it), off glibc, or
  when BRAINSEG_NO_RESTART is set.
  """
  environ = with_huge_pages(os.environ)
  if (not is_glibc() or environ == dict(os.environ)
      or os.environ.get("BRAINSEG_NO_RESTART")):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, environ)


def release_freed_heap() -> None:
  """Returns the freed pages of malloc's heap to the OS (glibc's malloc_trim).

  Does nothing off glibc or when the KEEP_FREED_HEAP environment variable is set.
  """
  if is_glibc() and not os.environ.get(KEEP_FREED_HEAP):
    ctypes.CDLL("libc.so.6").malloc_trim(0)
