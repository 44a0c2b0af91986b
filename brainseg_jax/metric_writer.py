"""Training metrics to TensorBoard event files (no TensorFlow) and a plain JSONL log."""

import json
import os
import sys

import jax

from data_prep import atomic


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without PyTorch.

  tensorboardX imports torch whenever it is installed, only to accept torch
  tensors, which this project never passes. In a training process that cost
  230 MB of resident memory and ~4 s of start-up (measured with torch 2.13
  installed beside the project, as in every benchmark run). Unless the process
  has already imported torch itself, torch is hidden during the import.
  """
  hidden = "torch" not in sys.modules
  if hidden:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    from tensorboardX import SummaryWriter
  finally:
    if hidden:
      del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:
  """Writes scalars on process 0 only; other processes hold a no-op writer.

  A run resumed from step `resumed_from` first drops the log lines of later
  steps (logged after the last checkpoint, then lost): they are logged again,
  so train_log.jsonl keeps one line per step, from the session that counts.
  """

  def __init__(self, workdir: str, resumed_from: int = 0):
    self._active = jax.process_index() == 0
    if self._active:
      self._tensorboard = _summary_writer_class()(os.path.join(workdir, "tensorboard"))
      path = os.path.join(workdir, "train_log.jsonl")
      _keep_steps_up_to(path, resumed_from)
      self._log = open(path, "a")

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


def _keep_steps_up_to(path: str, last_step: int):
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = [line for line in lines if _step(line) is not None and _step(line) <= last_step]
  if len(kept) != len(lines):
    atomic.write_text(path, "".join(kept))


def _step(line: str) -> int | None:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None  # a line cut short by a kill
