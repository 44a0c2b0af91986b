"""The project's main job, train then evaluate, as launch.py and compare run it."""

import jax
import ml_collections
from absl import logging

from brainseg_jax import evaluation, train
from brainseg_jax import workdir as workdir_lib


def default_workdir(config: ml_collections.ConfigDict) -> str:
  return f"runs/{config.experiment}"


def train_then_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from the workdir's latest checkpoint), then evaluates: the result.

  The result is evaluation's, with `train_seconds`: the training wall time
  summed over resumed sessions (0 for a model with nothing to train).
  """
  state = train.train(config, workdir)
  result = evaluation.evaluate(config, workdir)
  result["train_seconds"] = (0.0 if state is None else
                             workdir_lib.read_train_seconds(workdir, int(state.step)))
  if jax.process_index() == 0:
    logging.info("wrote metrics, figures and NIfTI maps to %s", workdir)
  return result
