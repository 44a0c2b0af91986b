"""Worker and device counts start from the cores the process may use, not the machine's."""

import os
import shutil
import subprocess
import sys

import pytest

from brainseg_jax import parallel
from data_prep import cores
from tests.helpers import PROJECT_ROOT


def test_the_cores_of_this_process():
  assert cores.usable() == len(os.sched_getaffinity(0))


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_a_process_limited_to_one_core_counts_one_and_sizes_its_workers_by_it():
  code = ("from data_prep import cores, runner; from brainseg_jax import parallel; "
          "print(cores.usable(), runner.num_workers(), parallel.default_cpu_devices())")
  env = {k: v for k, v in os.environ.items() if k != "BRAINSEG_PREP_WORKERS"}
  out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], cwd=PROJECT_ROOT,
                       env={**env, "PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True,
                       text=True, check=True).stdout.split()
  assert out == ["1", "1", str(parallel.devices_for_cores(1))]
