"""Orbax checkpoints of the train state, and restoring a trained model from a workdir.

Orbax writes each checkpoint into a temporary folder and renames it when it
is complete, so a killed run never leaves a half-written checkpoint that would
be picked up as the latest one. Evaluation and predict both get their trained
model from `restore_trained` (and predict its config from `saved_config`), so
the checks and the messages are the same for both.
"""

import gc
import os
import time
import warnings

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from brainseg_jax import config as config_lib
from brainseg_jax.errors import UserError
from brainseg_jax.models import Model, create_model, create_train_state
from brainseg_jax.workdir import checkpoint_dir, read_evaluated_config


class Checkpointer:
  """Saves the train state (and the config beside it) and restores the latest."""

  def __init__(self, workdir: str, max_to_keep: int = 3, create: bool = True):
    self.directory = checkpoint_dir(workdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, config_dict: dict):
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_dict)))

  def restore(self, template_state, step: int | None = None):
    """Restores `step` (default: latest) onto the shardings of `template_state`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise _no_checkpoints(os.path.dirname(self.directory))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template_state)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # Orbax raises many types for unreadable files.
      with warnings.catch_warnings():  # abandoned reads report now, and quietly
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        gc.collect()
      raise UserError(f"checkpoint {self.directory}/{step} cannot be restored "
                      f"({_first_sentence(e)}); launch.py on this workdir sets it aside and "
                      "resumes from the previous one") from e
    return restored.state

  def restore_newest_good(self, template_state):
    """Restores the newest checkpoint that restores, for resuming training.

    A checkpoint that cannot be restored (a file deleted or truncated) is
    moved aside to `checkpoints_broken/` beside it, never deleted, and the
    next older one is tried; each such step is reported in one line.
    """
    self._manager.reload()
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return self.restore(template_state, step)
      except UserError as e:
        moved_to = self._set_aside(step)
        logging.warning("%s; moved it to %s, trying the checkpoint before it",
                        str(e).split("; launch.py")[0], moved_to)
    raise UserError(f"no checkpoint in {self.directory} can be restored (the broken ones are in "
                    f"{self.directory}_broken): retrain in a new workdir")

  def _set_aside(self, step: int) -> str:
    aside = os.path.join(f"{self.directory}_broken", f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    os.replace(os.path.join(self.directory, str(step)), aside)
    self._manager.reload()
    return aside

  def saved_config(self, step: int | None = None) -> dict | None:
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    try:
      return self._manager.restore(
          step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    except Exception as e:  # Orbax raises many types for missing or unreadable items.
      raise UserError(f"checkpoint {self.directory}/{step} has no readable saved config "
                      f"({type(e).__name__}); it was not written by this project's training, "
                      "or a file of it was removed") from e

  def wait_until_finished(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()


def _first_sentence(error: Exception) -> str:
  """The gist of an Orbax/TensorStore error, whose message can run to hundreds of lines."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  text = text.split(" See full TensorStore details")[0]
  return f"{type(error).__name__}: {text[:200]}"


def _no_checkpoints(workdir: str) -> UserError:
  return UserError(f"no checkpoints in {os.path.abspath(workdir)}: train first "
                   f"(python launch.py --config=... --workdir={workdir})")


def _open(workdir: str) -> Checkpointer:
  if not os.path.isdir(checkpoint_dir(workdir)):
    raise _no_checkpoints(workdir)
  return Checkpointer(workdir, create=False)


def restore_trained(config: ml_collections.ConfigDict, workdir: str, model: Model,
                    step: int | None = None):
  """The train state of `step` (default: the latest) in `workdir`, checked: (state, step).

  Checked against `config` (the same model) and for finite parameters: a model
  whose weights hold NaN or inf scores nothing, and its maps would read as healthy.

  Models with nothing to train (the intensity baseline) need no checkpoint.
  The restore target is the state's shapes only (`jax.eval_shape`): running the
  model's init just to overwrite it compiled ~90 small programs, 13 s of
  predict's 14 s start-up for the default VAE.
  """
  if not model.trainable:
    return create_train_state(model, config), 0
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  template = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
      jax.eval_shape(lambda: create_train_state(model, config)))
  checkpointer = _open(workdir)
  step = _available(checkpointer, workdir, step)
  saved = checkpointer.saved_config(step)
  if saved is not None:
    _check_same_model(config, saved, workdir)
  state = checkpointer.restore(template, step)
  checkpointer.close()
  _check_finite(state, f"{checkpoint_dir(workdir)}/{int(state.step)}")
  return state, int(state.step)


def _available(checkpointer: Checkpointer, workdir: str, step: int | None) -> int | None:
  """`step` if its checkpoint is there (None: the latest), else a UserError naming the steps."""
  if step is None:
    return None
  steps = checkpointer.all_steps()
  if step not in steps:
    raise UserError(f"the threshold of {workdir} was set on checkpoint step {step}, which is no "
                    f"longer there (steps: {', '.join(map(str, steps)) or 'none'}): the run "
                    f"trained on; evaluate it again (python -m brainseg_jax.eval "
                    f"--workdir={workdir} ...) or calibrate again")
  return step


def _check_finite(state, where: str) -> None:
  """Every floating-point array of the state (parameters and optimiser moments of each network)."""
  leaves = [leaf for leaf in jax.tree.leaves(jax.device_get(state))
            if np.issubdtype(np.asarray(leaf).dtype, np.floating)]
  bad = sum(int(np.size(leaf) - np.count_nonzero(np.isfinite(leaf))) for leaf in leaves)
  if bad:
    raise UserError(f"checkpoint {where} holds {bad} non-finite numbers (NaN or inf): "
                    "training diverged; retrain (a lower learning_rate?)")


def _check_same_model(config: ml_collections.ConfigDict, saved: dict, workdir: str):
  saved_name = (saved.get("model") or {}).get("name")
  if saved_name != config.model.name:
    raise UserError(f"the model in {workdir} is a {saved_name!r}, not a {config.model.name!r}: "
                    "pass the config it was trained with")
  differences = config_lib.model_differences(config, saved)
  if differences:
    listed = ", ".join(f"model.{key}={trained!r} (config: {given!r})"
                       for key, (trained, given) in differences.items())
    raise UserError(f"the model in {workdir} was trained with {listed}: pass the config it "
                    "was trained with")


def saved_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
  """The experiment config of the model in `workdir`, as it was saved (config.from_saved).

  Saved with each checkpoint (`step`; default the latest); a model with nothing to train (the
  intensity baseline) has no checkpoint, and its config is the one evaluation
  wrote. The config is checked: a hand-edited value is a one-line error.
  """
  has_checkpoints = os.path.isdir(checkpoint_dir(workdir))
  if has_checkpoints:
    checkpointer = _open(workdir)
    saved = checkpointer.saved_config(_available(checkpointer, workdir, step))
    checkpointer.close()
  else:
    saved = read_evaluated_config(workdir)
  if saved is None:
    raise _no_checkpoints(workdir)
  config = config_lib.from_saved(saved)
  if not has_checkpoints and create_model(config).trainable:
    raise _no_checkpoints(workdir)  # a trainable model's record without its checkpoints
  config_lib.check(config)
  return config
