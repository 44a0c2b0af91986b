"""The CPU defaults a run starts with: device count and XLA:CPU's convolution library."""

import json
import os
import subprocess
import sys

import pytest

from brainseg_jax import parallel
from tests.helpers import PROJECT_ROOT


@pytest.mark.parametrize("cores, devices", [(1, 1), (2, 2), (3, 2), (4, 4), (6, 4), (8, 8),
                                            (64, 8)])
def test_one_device_per_core_a_power_of_two_at_most_8(cores, devices):
  assert parallel.devices_for_cores(cores) == devices


@pytest.mark.parametrize("vendor, flags, expected", [
    ("GenuineIntel", "", "--xla_cpu_use_onednn=true"),
    ("GenuineIntel", "--xla_cpu_use_onednn=false", "--xla_cpu_use_onednn=false"),  # user's wins
    ("AuthenticAMD", "", ""),
    ("", "--xla_force_host_platform_device_count=4", "--xla_force_host_platform_device_count=4"),
])
def test_onednn_on_intel_only_and_never_over_the_users_flag(monkeypatch, vendor, flags,
                                                            expected):
  monkeypatch.setenv("XLA_FLAGS", flags)
  parallel.use_onednn_where_faster(vendor)
  assert os.environ["XLA_FLAGS"] == expected


def _started(env_flags: str, *args: str) -> dict:
  """What a fresh process gets from split_host_into_devices(*args)."""
  code = ("import json, os, sys; from brainseg_jax import parallel; "
          f"parallel.split_host_into_devices({', '.join(args)}); import jax; "
          "print(json.dumps({'devices': jax.device_count(), 'flags': os.environ['XLA_FLAGS'], "
          "'cores': len(os.sched_getaffinity(0))}))")
  env = {**os.environ, "XLA_FLAGS": env_flags, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def test_a_fresh_process_gets_one_device_per_core_by_default_and_the_count_it_asks_for():
  default = _started("")
  assert default["devices"] == parallel.devices_for_cores(default["cores"])
  assert ("--xla_cpu_use_onednn=true" in default["flags"]) == (
      parallel._cpu_vendor() == "GenuineIntel")
  assert _started("", "3")["devices"] == 3
  assert _started("--xla_force_host_platform_device_count=5", "3")["devices"] == 5
