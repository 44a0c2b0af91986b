"""Training metrics to TensorBoard event files (no TensorFlow) and a plain JSONL log."""

import json
import os

import jax
from tensorboardX import SummaryWriter


class MetricWriter:
  """Writes scalars on process 0 only; other processes hold a no-op writer."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    if self._active:
      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._log = open(os.path.join(workdir, "train_log.jsonl"), "a")

  def write_scalars(self, step: int, scalars: dict[str, float]):
    if not self._active:
      return
    for name, value in scalars.items():
      self._tensorboard.add_scalar(name, value, step)
    self._log.write(json.dumps({"step": step, **scalars}) + "\n")
    self._log.flush()

  def close(self):
    if self._active:
      self._tensorboard.close()
      self._log.close()
