"""train_log.jsonl keeps one line per step across resumed sessions; TensorBoard without PyTorch."""

import json
import pathlib
import subprocess
import sys

import pytest

from brainseg_jax.metric_writer import MetricWriter


def test_a_resumed_run_drops_the_steps_logged_after_its_checkpoint(tmp_path):
  log = tmp_path / "train_log.jsonl"
  log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (10, 20, 30, 40))
                 + '{"step": 5')  # a line cut short by kill -9
  writer = MetricWriter(str(tmp_path), resumed_from=20)
  for step in (30, 40):
    writer.write_scalars(step, {"loss": 0.5})
  writer.close()
  lines = [json.loads(line) for line in log.read_text().splitlines()]
  assert [line["step"] for line in lines] == [10, 20, 30, 40]
  assert [line["loss"] for line in lines] == [1.0, 1.0, 0.5, 0.5]


def test_writing_metrics_does_not_import_pytorch(tmp_path):
  """tensorboardX would import torch (230 MB, ~4 s) whenever it is installed."""
  pytest.importorskip("torch", reason="only measurable where PyTorch is installed")
  code = ("import sys; from brainseg_jax import metric_writer; "
          f"w = metric_writer.MetricWriter({str(tmp_path)!r}); "
          "w.write_scalars(1, {'loss': 0.5}); w.close(); "
          "print('torch' in sys.modules); import torch")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        cwd=pathlib.Path(__file__).resolve().parent.parent, check=True)
  assert done.stdout.strip() == "False"
