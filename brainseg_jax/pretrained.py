"""Trained models shipped inside the package, usable right after `pip install`.

Each lives in `brainseg_jax/pretrained/<name>/`:
  model.json            name, version, one-line summary, the checkpoint step its
                        thresholds were set on, its training data and licence, its card
  config.json           the run's saved config
  params.npz            the trained parameters (float32; none for the intensity baseline)
  metrics.json          the evaluation that set its thresholds (per-volume rows left out)
  standardization.json  only if the model standardises intensities

A shipped model is used as a workdir: its first use writes one into the user's
data folder (`models_home()`, never site-packages), with an Orbax checkpoint of
the parameters at the step its thresholds were set on. predict, calibrate and
eval then treat it like any run of one's own, and a calibration of it is
stored there by name. `export` makes such a folder from a trained workdir.
"""

import contextlib
import fcntl
import json
import os
import shutil

import numpy as np
from flax import traverse_util

from brainseg_jax import config as config_lib
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.errors import UserError
from data_prep import atomic

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
MODEL_FILE = "model.json"
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.npz"
# Written last into a materialised workdir: its presence means the workdir is complete.
SHIPPED_MARKER = "shipped_model.json"


def models_home() -> str:
  """Where shipped models become workdirs: $BRAINSEG_HOME/models, else the XDG data folder."""
  home = os.environ.get("BRAINSEG_HOME") or os.path.join(
      os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "brainseg_jax")
  return os.path.join(home, "models")


def names() -> list[str]:
  if not os.path.isdir(SHIPPED_DIR):
    return []
  return sorted(name for name in os.listdir(SHIPPED_DIR)
                if os.path.isfile(os.path.join(SHIPPED_DIR, name, MODEL_FILE)))


def card(name: str) -> dict:
  """The model's model.json; an unknown name is a UserError listing the known ones."""
  path = os.path.join(SHIPPED_DIR, name, MODEL_FILE)
  if not name or not os.path.isfile(path):
    raise UserError(f"no shipped model {name!r}; known: {', '.join(names()) or 'none'} "
                    "(--list_models describes them)")
  with open(path) as f:
    return json.load(f)


def listing() -> str:
  """One line per shipped model: its name and what it is for."""
  lines = [f"{name}: {card(name)['summary']}" for name in names()]
  return "\n".join(lines) if lines else "no models are shipped with this installation"


def workdir(name: str, into: str | None = None) -> str:
  """The workdir of the shipped model `name`, written on first use (or into `into`).

  Written into a temporary folder beside it and renamed when complete, under a
  lock: two first uses at once write it once, a killed one leaves nothing half-done.
  A newer version of the model gets a folder of its own; a newer package's
  evaluation of the same version (its metrics.json) replaces the copy's.
  """
  info = card(name)
  target = os.path.abspath(into or os.path.join(models_home(), f"{name}-{info['version']}"))
  # The copy in the models home follows the package's evaluation of the model; a folder the
  # user named (eval --model) keeps whatever was evaluated there.
  follows_package = into is None
  if _complete(target, info) and (not follows_package or _current_evaluation(name, target)):
    return target
  os.makedirs(os.path.dirname(target), exist_ok=True)
  with _lock(target + ".lock"):
    if _complete(target, info):
      if follows_package:
        _refresh_evaluation(name, target)
      return target
    if os.path.exists(target):
      raise UserError(f"{target} exists and is not a complete copy of model {name!r}: "
                      "remove it, or pass another folder")
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    _materialise(name, info, partial)
    os.replace(partial, target)
  return target


def _current_evaluation(name: str, target: str) -> bool:
  """True when the copy's metrics.json is the package's (the same model's evaluation)."""
  shipped = os.path.join(SHIPPED_DIR, name, workdir_lib.METRICS_FILE)
  copied = os.path.join(target, workdir_lib.METRICS_FILE)
  if not os.path.isfile(shipped):
    return True
  if not os.path.isfile(copied):
    return False
  with open(shipped, "rb") as a, open(copied, "rb") as b:
    return a.read() == b.read()


def _refresh_evaluation(name: str, target: str) -> None:
  """A newer package's evaluation of the same model (e.g. with thresholds added) replaces the
  copy's; its checkpoint and calibrations stay."""
  if not _current_evaluation(name, target):
    source = os.path.join(SHIPPED_DIR, name, workdir_lib.METRICS_FILE)
    with atomic.atomic_path(os.path.join(target, workdir_lib.METRICS_FILE)) as tmp:
      shutil.copyfile(source, tmp)


def _complete(target: str, info: dict) -> bool:
  marker = os.path.join(target, SHIPPED_MARKER)
  if not os.path.isfile(marker):
    return False
  with open(marker) as f:
    return json.load(f).get("version") == info["version"]


@contextlib.contextmanager
def _lock(path: str):
  with open(path, "a+") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _materialise(name: str, info: dict, target: str) -> None:
  from brainseg_jax.checkpoints import Checkpointer
  from brainseg_jax.models import create_model, create_train_state

  source = os.path.join(SHIPPED_DIR, name)
  os.makedirs(target)
  with open(os.path.join(source, CONFIG_FILE)) as f:
    saved = json.load(f)
  config = config_lib.from_saved(saved)
  model = create_model(config)
  if model.trainable:
    state = create_train_state(model, config)
    params = _load_params(os.path.join(source, PARAMS_FILE), state.params)
    checkpointer = Checkpointer(target, max_to_keep=1)
    checkpointer.save(info["checkpoint_step"], state.replace(params=params,
                                                             step=info["checkpoint_step"]), saved)
    checkpointer.wait_until_finished()
    checkpointer.close()
  else:
    workdir_lib.write_evaluated_config(target, saved)
  for file_name in (workdir_lib.METRICS_FILE, workdir_lib.STANDARDIZATION_FILE):
    if os.path.isfile(os.path.join(source, file_name)):
      shutil.copyfile(os.path.join(source, file_name), os.path.join(target, file_name))
  atomic.write_json(os.path.join(target, SHIPPED_MARKER), info)


def _load_params(path: str, template):
  """The shipped parameters, in the structure (and checked against the shapes) of `template`."""
  import jax

  with np.load(path) as arrays:
    shipped = dict(arrays)
  expected = traverse_util.flatten_dict(template, sep="/")
  if set(shipped) != set(expected) or any(
      shipped[k].shape != tuple(np.shape(v)) for k, v in expected.items()):
    raise UserError(f"{path} does not fit its model's config: the package's model files "
                    "were changed; reinstall the package")
  return traverse_util.unflatten_dict({k: jax.numpy.asarray(v) for k, v in shipped.items()},
                                      sep="/")


def export(run_dir: str, name: str, summary: str, version: str, card_path: str,
           training_data: str, licence: str, output_root: str = SHIPPED_DIR) -> str:
  """Writes the shipped-model folder `name` from the evaluated run in `run_dir`."""
  import jax

  from brainseg_jax import checkpoints
  from brainseg_jax.models import create_model

  threshold = workdir_lib.model_threshold(run_dir)
  config = checkpoints.saved_config(run_dir, threshold.checkpoint_step)
  model = create_model(config)
  target = os.path.join(output_root, name)
  os.makedirs(target, exist_ok=True)
  if model.trainable:
    state, _ = checkpoints.restore_trained(config, run_dir, model, threshold.checkpoint_step)
    if not hasattr(state, "params"):
      raise UserError(f"a {config.model.name} model has several networks; only models with one "
                      "parameter tree can be shipped so far")
    params = {k: np.asarray(jax.device_get(v), np.float32)
              for k, v in traverse_util.flatten_dict(state.params, sep="/").items()}
    with atomic.atomic_path(os.path.join(target, PARAMS_FILE)) as tmp:
      np.savez_compressed(tmp, **params)
  shipped_config = config.to_dict()
  # Where the training data lay on the machine that trained it means nothing to a user.
  shipped_config["dataset"].update(manual_dir="", data_dir="")
  shipped_config["eval"].update(test_manual_dir="")
  atomic.write_json(os.path.join(target, CONFIG_FILE), shipped_config)
  metrics = workdir_lib.read_metrics(run_dir)
  metrics.pop("per_volume", None)
  atomic.write_json(os.path.join(target, workdir_lib.METRICS_FILE), metrics, allow_nan=True)
  standardization = workdir_lib.standardization_path(run_dir)
  if os.path.isfile(standardization):
    shutil.copyfile(standardization, os.path.join(target, workdir_lib.STANDARDIZATION_FILE))
  info = {"name": name, "version": version, "summary": summary, "family": config.model.name,
          "checkpoint_step": threshold.checkpoint_step, "training_data": training_data,
          "licence": licence, "card": card_path}
  atomic.write_json(os.path.join(target, MODEL_FILE), info)
  return target
