"""Multi-process training: 2 processes x 2 CPU devices equal 1 process x 4 devices."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from brainseg_jax import checkpoints
from brainseg_jax.datasets import input_pipeline
from brainseg_jax.models import create_model, create_train_state
from configs import ae
from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow  # two training processes

STEPS = 20


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, data_dir, extra=(), env_overrides=None):
  args = [sys.executable, "launch.py", "--config=configs/ae.py:smoke", f"--workdir={workdir}",
          f"--config.dataset.data_dir={data_dir}", f"--config.num_train_steps={STEPS}",
          "--config.checkpoint_every_steps=10", *extra]
  env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env_overrides or {})}
  return subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _params(workdir, data_dir):
  config = ae.get_config("smoke")
  config.dataset.data_dir = data_dir
  config.num_train_steps = STEPS
  template = create_train_state(create_model(config), config)
  return jax.device_get(checkpoints.Checkpointer(str(workdir), create=False).restore(template)
                        .params)


def test_two_processes_match_one_process(tmp_path, data_dir):
  config = ae.get_config("smoke")
  config.dataset.data_dir = data_dir
  input_pipeline.get_builder(config.dataset)  # built once here, not raced by the runs below
  port = _free_port()
  # Each worker process gets 2 CPU devices: no forced device count from the test's env.
  workers = [_launch(tmp_path / "two", data_dir,
                     ["--cpu_devices=2", f"--coordinator_address=127.0.0.1:{port}",
                      "--num_processes=2", f"--process_id={i}"], {"XLA_FLAGS": ""})
             for i in range(2)]
  single = _launch(tmp_path / "one", data_dir, ["--cpu_devices=4"], {"XLA_FLAGS": ""})
  for process in (*workers, single):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]

  two, one = _params(tmp_path / "two", data_dir), _params(tmp_path / "one", data_dir)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), two, one)
  # Both evaluated the same model: the same metrics, written once.
  metrics_two = json.loads((tmp_path / "two" / "metrics.json").read_text())
  metrics_one = json.loads((tmp_path / "one" / "metrics.json").read_text())
  assert metrics_two["pooled"]["all"]["dice"] == np.float64(metrics_one["pooled"]["all"]["dice"])
