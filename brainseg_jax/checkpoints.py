"""Orbax checkpoints of the train state, and restoring a trained model from a workdir.

Orbax writes each checkpoint into a temporary folder and renames it when it
is complete, so a killed run never leaves a half-written checkpoint that would
be picked up as the latest one. Evaluation and predict both get their trained
model from `restore_trained` (and predict its config from `saved_config`), so
the checks and the messages are the same for both.
"""

import asyncio
import functools
import gc
import json
import logging as std_logging
import os
import sys
import time
import warnings

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from brainseg_jax.errors import UserError
from brainseg_jax.models import Model, create_model, create_train_state
from configs import default


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
  """Saves the train state (and the config beside it) and restores the latest."""

  def __init__(self, workdir: str, max_to_keep: int = 3, create: bool = True):
    self.directory = checkpoint_dir(workdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, config_dict: dict):
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_dict)))

  def restore(self, template_state, step: int | None = None):
    """Restores `step` (default: latest) onto the shardings of `template_state`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise _no_checkpoints(os.path.dirname(self.directory))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template_state)
    _silence_orbax_leftovers()
    _quiet_closed_loop_callbacks()
    _drop_unretrieved_orbax_task_errors()
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


def _silence_orbax_leftovers():
  """Drops the "Exception ignored in <coroutine>" reports of a failed Orbax restore.

  When one array of a checkpoint cannot be read, Orbax abandons the reads of the
  others; each abandoned coroutine reports its own error with a full TensorStore
  spec (thousands of lines) as it is garbage-collected. The one line that names
  the broken checkpoint says all of it.
  """
  previous = sys.unraisablehook
  if getattr(previous, "drops_orbax_leftovers", False):
    return

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and _in_orbax(code):
      return
    previous(unraisable)

  hook.drops_orbax_leftovers = True
  sys.unraisablehook = hook


def _in_orbax(code) -> bool:
  return f"{os.sep}orbax{os.sep}" in code.co_filename


def _from_orbax(error: BaseException | None) -> bool:
  traceback = error.__traceback__ if error is not None else None
  while traceback is not None:
    if _in_orbax(traceback.tb_frame.f_code):
      return True
    traceback = traceback.tb_next
  return False


_NEVER_RETRIEVED = ("Task exception was never retrieved", "Future exception was never retrieved")


class _UnretrievedOrbaxTaskErrors(std_logging.Filter):
  """Drops asyncio's "Task exception was never retrieved" for Orbax's abandoned reads."""

  drops_orbax_task_errors = True

  def filter(self, record):
    error = record.exc_info[1] if record.exc_info else None
    return not (record.getMessage().startswith(_NEVER_RETRIEVED) and _from_orbax(error))


def _drop_unretrieved_orbax_task_errors():
  """The asyncio form of `_silence_orbax_leftovers`: when several reads of a broken
  checkpoint fail at once, Orbax retrieves the first error and asyncio logs each
  other one, with its traceback and TensorStore spec, when its task is collected
  (seen under load: the order in which the reads fail depends on timing).
  """
  logger = std_logging.getLogger("asyncio")
  if not any(getattr(f, "drops_orbax_task_errors", False) for f in logger.filters):
    logger.addFilter(_UnretrievedOrbaxTaskErrors())


def _quiet_closed_loop_callbacks():
  """Lets a callback scheduled onto a closed event loop be dropped instead of raising.

  When a restore fails, Orbax closes its event loop while TensorStore's reader
  threads are still finishing the reads it abandoned; each one then calls
  `loop.call_soon_threadsafe`, which raises "Event loop is closed", and
  TensorStore prints that traceback from C++ (past every Python hook), dozens
  of times, for seconds. A closed loop never runs a callback anyway, so the
  callback is dropped without a word; open loops are untouched.
  """
  loop_class = asyncio.BaseEventLoop
  if getattr(loop_class.call_soon_threadsafe, "drops_when_closed", False):
    return
  original = loop_class.call_soon_threadsafe

  @functools.wraps(original)
  def call_soon_threadsafe(self, *args, **kwargs):
    if self.is_closed():
      return None
    return original(self, *args, **kwargs)

  call_soon_threadsafe.drops_when_closed = True
  loop_class.call_soon_threadsafe = call_soon_threadsafe


def _no_checkpoints(workdir: str) -> UserError:
  return UserError(f"no checkpoints in {os.path.abspath(workdir)}: train first "
                   f"(python launch.py --config=... --workdir={workdir})")


def _open(workdir: str) -> Checkpointer:
  if not os.path.isdir(checkpoint_dir(workdir)):
    raise _no_checkpoints(workdir)
  return Checkpointer(workdir, create=False)


def restore_trained(config: ml_collections.ConfigDict, workdir: str, model: Model):
  """The latest train state in `workdir`, checked against `config`: (state, step).

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
  saved = checkpointer.saved_config()
  if saved is not None and saved.get("model") != _jsonable(config.model.to_dict()):
    raise UserError(f"the model in {workdir} was trained with model config {saved.get('model')}, "
                    f"not {config.model.to_dict()}: pass the config it was trained with")
  state = checkpointer.restore(template)
  checkpointer.close()
  return state, int(state.step)


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The experiment config of the model in `workdir`: saved with its latest checkpoint.

  A model with nothing to train (the intensity baseline) has no checkpoint;
  its config is the one evaluation wrote beside metrics.json. Today's defaults
  fill the keys added since the run was made (e.g. new eval switches), so an
  older run still evaluates and predicts.
  """
  if os.path.isdir(checkpoint_dir(workdir)):
    checkpointer = _open(workdir)
    saved = checkpointer.saved_config()
    checkpointer.close()
  else:
    saved = _evaluated_untrainable_config(workdir)
  if saved is None:
    raise _no_checkpoints(workdir)
  config = default.get_config()
  _merge(config, saved)
  return config


EVALUATED_CONFIG_FILE = "config.json"


def _evaluated_untrainable_config(workdir: str) -> dict | None:
  path = os.path.join(workdir, EVALUATED_CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    saved = json.load(f)
  config = default.get_config()
  _merge(config, saved)
  return None if create_model(config).trainable else saved


def _merge(config: ml_collections.ConfigDict, saved: dict):
  with config.unlocked():
    for key, value in saved.items():
      if isinstance(value, dict) and key in config:
        _merge(config[key], value)
      else:
        config[key] = tuple(value) if isinstance(value, list) else value


def _jsonable(d):
  return json.loads(json.dumps(d))
