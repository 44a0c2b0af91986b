"""The CPU cores this process may run on: where every worker and device count starts.

A container, a batch scheduler or `taskset` can give a process fewer cores than
the machine has; counting the machine's (os.cpu_count) would start more workers
than there are cores to run them. No imports beyond the standard library, so a
training process can ask without loading the preprocessing stack.
"""

import os


def usable() -> int:
  """Cores in this process's affinity mask where the OS has one (Linux), else every core."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1
