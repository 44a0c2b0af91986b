"""The device count a CPU-only run starts with."""

import json
import os
import subprocess
import sys

import pytest

from brainseg_jax import parallel
from tests.helpers import PROJECT_ROOT


@pytest.mark.parametrize("cores, devices", [(1, 2), (2, 4), (3, 4), (4, 8), (64, 8)])
def test_two_devices_per_core_a_power_of_two_at_most_8(cores, devices):
  assert parallel.devices_for_cores(cores) == devices


def _started(env_flags: str, *args: str) -> dict:
  """What a fresh process gets from split_host_into_devices(*args)."""
  code = ("import json, os; from brainseg_jax import parallel; "
          f"parallel.split_host_into_devices({', '.join(args)}); import jax; "
          "print(json.dumps({'devices': jax.device_count(), 'flags': os.environ['XLA_FLAGS'], "
          "'cores': len(os.sched_getaffinity(0))}))")
  env = {**os.environ, "XLA_FLAGS": env_flags, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def test_a_fresh_process_gets_the_default_count_the_count_it_asks_for_or_the_forced_one():
  default = _started("")
  assert default["devices"] == parallel.devices_for_cores(default["cores"])
  assert "--xla_cpu_multi_thread_eigen=false" in default["flags"]
  one = _started("", "1")
  assert one["devices"] == 1 and "multi_thread_eigen" not in one["flags"]
  assert _started("", "3")["devices"] == 3
  assert _started("--xla_force_host_platform_device_count=5", "3")["devices"] == 5
