import os
import subprocess
import sys

import pytest

from brainseg_jax import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
glibc_only = pytest.mark.skipif(not host_memory.is_glibc(), reason="glibc's malloc only")


def run_python(code, *args, **env):
  """stdout of `python -c code args...` started without GLIBC_TUNABLES."""
  environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                        text=True, check=True, env={**environ, **env}).stdout


def test_huge_pages_tunable_is_added_once_and_keeps_the_others():
  once = host_memory.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "1"})
  assert once == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "A": "1"}
  assert host_memory.with_huge_pages(once) == once
  assert host_memory.with_huge_pages({}) == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


@glibc_only
def test_process_restarts_once_with_the_tunable_and_its_arguments():
  code = ("import os, sys; print('run', os.environ.get('GLIBC_TUNABLES', '-'));"
          "from brainseg_jax import host_memory; host_memory.restart_with_huge_pages();"
          "print('after', sys.argv[1:])")
  assert run_python(code, "--x=1").splitlines() == [
      "run -", "run glibc.malloc.hugetlb=1", "after ['--x=1']"]
  assert run_python(code, BRAINSEG_NO_RESTART="1").splitlines() == ["run -", "after []"]


def _transparent_huge_pages_possible():
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      return "[never]" not in f.read()
  except OSError:
    return False


@glibc_only
@pytest.mark.skipif(not _transparent_huge_pages_possible(), reason="no transparent huge pages")
def test_restarted_process_gets_a_large_buffer_in_huge_pages():
  """What the restart is for: a 256 MB buffer (as XLA's step temporaries) in 2 MiB pages."""
  code = ("from brainseg_jax import host_memory; host_memory.restart_with_huge_pages();"
          "import ctypes; libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p;"
          "ctypes.memset(libc.malloc(2**28), 1, 2**28);"  # plain malloc, as XLA's
          "print([int(line.split()[1]) for line in open('/proc/self/smaps_rollup')"
          " if line.startswith('AnonHugePages')][0])")
  with_tunable = int(run_python(code))
  without = int(run_python(code, BRAINSEG_NO_RESTART="1"))
  assert with_tunable >= 128 * 1024, with_tunable  # kB: at least half the buffer
  assert without < 32 * 1024, without


@glibc_only
def test_release_freed_heap_hands_freed_memory_back():
  code = ("import gc; from brainseg_jax import host_memory;"
          "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096 // 2**20;"
          "blocks = [bytearray(64 * 1024) for _ in range(4000)]; keep = bytearray(64 * 1024);"
          "del blocks; gc.collect(); before = rss(); host_memory.release_freed_heap();"
          "print(before, rss())")
  before, after = map(int, run_python(code).split())
  assert before - after >= 150, (before, after)  # MB of the 250 MB freed
  # Kept (a benchmark measuring what the release saves).
  before, after = map(int, run_python(code, **{host_memory.KEEP_FREED_HEAP: "1"}).split())
  assert before - after < 50, (before, after)
