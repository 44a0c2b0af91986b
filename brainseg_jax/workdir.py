"""The run's folder (workdir): every file in it, by name and format, and who may write it.

    checkpoints/             Orbax checkpoints of the train state, each with its config
    config.json              the config evaluation ran with (the only record of a model with
                             nothing to train, whose config no checkpoint holds)
    metrics.json             evaluation's protocol (thresholds), pooled and per-volume metrics
    standardization.json     the intensity standard scale, learned on the training split
    calibrations/<name>.json thresholds re-derived on a site's own healthy scans
    train_time.json          training wall time up to the latest checkpoint
    .lock                    held by the one run writing here

Everyone else reads and writes these through the functions below; evaluation's
human-readable outputs (tables, figures, NIfTI maps) are outputs.py's.

Two runs writing the same checkpoints and outputs would corrupt both, so
training and evaluation hold an exclusive lock on the workdir (`exclusive`).
The lock is an `fcntl.flock` on `WORKDIR/.lock`: the kernel releases it when
its process ends, however it ends, so a killed run never leaves it stuck.
"""

import contextlib
import dataclasses
import fcntl
import glob
import json
import math
import os
import re
import tempfile

import jax

from brainseg_jax import adaptive as adaptive_lib
from brainseg_jax.errors import UserError
from data_prep import atomic

LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoints"
EVALUATED_CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
STANDARDIZATION_FILE = "standardization.json"
CALIBRATION_DIR = "calibrations"
TRAIN_TIME_FILE = "train_time.json"


def ensure_writable(directory: str, what: str = "workdir") -> str:
  """Creates `directory` if needed and proves it can be written; returns its absolute path."""
  path = os.path.abspath(directory)
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
      pass
  except FileExistsError as e:
    raise UserError(f"{what} {path} is a file, not a directory") from e
  except OSError as e:
    raise UserError(f"{what} {path} is not writable: {e.strerror or e}") from e
  return path


@contextlib.contextmanager
def exclusive(workdir: str):
  """Holds the workdir's lock (process 0 of a multi-process run); refuses a workdir in use.

  Temporary files that a killed run left behind (`atomic` names them
  `.<name>.*.tmp*`) are removed once the lock is held: nobody else writes here.
  """
  if jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  with open(path, "a+") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise UserError(f"workdir {workdir} is in use by {_holder(lock)}: wait for it to finish, "
                      "or pass another --workdir") from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    _remove_stale_temporaries(workdir)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _holder(lock) -> str:
  lock.seek(0)
  pid = lock.read().strip()
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
  except OSError:
    command = ""
  return f"process {pid} ({command})" if command else f"process {pid or '?'}"


def _remove_stale_temporaries(workdir: str):
  for directory in (workdir, *glob.glob(os.path.join(workdir, "*/"))):
    atomic.remove_stale(directory)


def read_train_seconds(workdir: str, step: int) -> float:
  """Wall-clock training time that produced the checkpoint at `step` (0 if unknown).

  Summed over every session of a resumed run; time spent after a session's
  last checkpoint is lost work and not counted.
  """
  try:
    with open(os.path.join(workdir, TRAIN_TIME_FILE)) as f:
      record = json.load(f)
  except (OSError, ValueError):
    return 0.0
  return float(record["seconds"]) if record.get("step") == step else 0.0


def write_train_seconds(workdir: str, step: int, seconds: float) -> None:
  atomic.write_json(os.path.join(workdir, TRAIN_TIME_FILE), {"step": step, "seconds": seconds})


# --------------------------------------------------------------------------- files of a run


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def standardization_path(workdir: str) -> str:
  return os.path.join(workdir, STANDARDIZATION_FILE)


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS_FILE)


def write_metrics(workdir: str, result: dict) -> None:
  # An undefined metric (AUROC without lesions) is NaN here; the thresholds are checked finite.
  atomic.write_json(metrics_path(workdir), result, allow_nan=True)


def read_metrics(workdir: str) -> dict:
  """Evaluation's record of the run; a missing or unreadable one is a UserError naming it."""
  path = metrics_path(workdir)
  if not os.path.isfile(path):
    raise UserError(f"{path} not found: run python -m brainseg_jax.eval first; its healthy "
                    "validation data sets the threshold")
  return _read_json(path)


def has_metrics(workdir: str) -> bool:
  return os.path.isfile(metrics_path(workdir))


def write_evaluated_config(workdir: str, config_dict: dict) -> None:
  atomic.write_json(os.path.join(workdir, EVALUATED_CONFIG_FILE), config_dict)


def read_evaluated_config(workdir: str) -> dict | None:
  """The config evaluation wrote (None if there is none)."""
  path = os.path.join(workdir, EVALUATED_CONFIG_FILE)
  return _read_json(path) if os.path.isfile(path) else None


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{path} cannot be read: {e}") from e


# --------------------------------------------------------------------------- thresholds

# Threshold names: "fpr_<f>" flags a fraction f of healthy validation brain voxels;
# LABELLED is the threshold of best Dice on the validation split's lesion labels.
LABELLED = "labelled_validation"


def threshold_name(healthy_fpr: float) -> str:
  return f"fpr_{healthy_fpr:g}"


def threshold_label(name: str) -> str:
  """In words: "healthy FPR 0.01" for fpr_0.01; "labelled validation" for the labelled one."""
  return (f"healthy FPR {name[len('fpr_'):]}" if name.startswith("fpr_")
          else name.replace("_", " "))


@dataclasses.dataclass(frozen=True)
class Threshold:
  value: float
  healthy_fpr: float  # the fraction of healthy brain voxels it flags, by construction
  source: str  # in words, for reports
  checkpoint_step: int  # the model it was set on: only that checkpoint may score against it
  # Per-scan adaptive thresholds (brainseg_jax/adaptive.py): `value` is then k, and each
  # scan's threshold is `for_scan` of its own anomaly map inside its brain.
  adaptive: bool = False

  def for_scan(self, brain_scores) -> "Threshold":
    """The threshold that applies to one scan (itself, unless adaptive)."""
    if not self.adaptive:
      return self
    return dataclasses.replace(self, value=adaptive_lib.scan_threshold(brain_scores, self.value),
                               adaptive=False)


def _evaluation_protocol(workdir: str) -> tuple[str, dict, dict]:
  """(metrics.json's path, its contents, its protocol): where evaluation's thresholds are."""
  path = metrics_path(workdir)
  metrics = read_metrics(workdir)
  return path, metrics, _field(metrics, "protocol", dict, path)


def model_threshold(workdir: str) -> Threshold:
  """The headline threshold evaluation chose on healthy validation data (metrics.json)."""
  path, metrics, protocol = _evaluation_protocol(workdir)
  value = _number(protocol, "threshold", path, "protocol.")
  fpr = _fraction(protocol, "healthy_fpr", path, "protocol.")
  source = _field(protocol, "threshold_source", str, path, "protocol.")
  step = _step(metrics, path)
  return Threshold(value, fpr, f"model evaluation: {source}, healthy FPR {fpr:g}", step)


def adaptive_threshold(workdir: str) -> Threshold:
  """The per-scan adaptive threshold evaluation set on healthy validation data (metrics.json)."""
  path, metrics, protocol = _evaluation_protocol(workdir)
  fpr = _fraction(protocol, "healthy_fpr", path, "protocol.")
  if "adaptive_thresholds" not in protocol:
    raise UserError(f"{path} has no adaptive threshold (evaluated before they existed): "
                    f"evaluate again (python -m brainseg_jax.eval --workdir={workdir} ...)")
  ks = _field(protocol, "adaptive_thresholds", dict, path, "protocol.")
  k = _number(ks, adaptive_lib.name(fpr), path, "protocol.adaptive_thresholds.")
  return Threshold(k, fpr, f"per scan, adaptive: its own map's median + {k:.3g} x spread "
                   f"inside the brain (k from the healthy validation brains, healthy FPR {fpr:g})",
                   _step(metrics, path), adaptive=True)


def _step(record, path: str) -> int:
  step = _field(record, "checkpoint_step", int, path)
  if step < 0:
    raise UserError(f"{path}: checkpoint_step is {step}, not a step: the file was edited")
  return step


def _field(record, key: str, kind, path: str, prefix: str = ""):
  """`record[key]`, of type `kind` (a bool is no number), or a UserError naming file and key."""
  value = record.get(key) if isinstance(record, dict) else None
  if not isinstance(value, kind) or isinstance(value, bool):
    raise UserError(f"{path}: {prefix}{key} is {value!r}: the file was edited or truncated; "
                    "evaluate (or calibrate) again to rewrite it")
  return value


def _number(record, key: str, path: str, prefix: str = "") -> float:
  """A finite threshold >= 0: anomaly scores are residuals or normalised intensities."""
  value = float(_field(record, key, (int, float), path, prefix))
  if not math.isfinite(value) or value < 0:
    raise UserError(f"{path}: {prefix}{key} is {value!r}, not a finite threshold >= 0: the "
                    "file was edited; evaluate (or calibrate) again to rewrite it")
  return value


def _fraction(record, key: str, path: str, prefix: str = "") -> float:
  value = float(_field(record, key, (int, float), path, prefix))
  if not 0 < value < 1:
    raise UserError(f"{path}: {prefix}{key} is {value!r}, not a fraction in (0, 1)")
  return value


def calibration_path(workdir: str, name: str) -> str:
  if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
    raise UserError(f"calibration name {name!r}: use letters, digits, '_', '-' or '.'")
  return os.path.join(workdir, CALIBRATION_DIR, f"{name}.json")


def calibration_record(name: str, folder: str, scans: list[str], skipped: dict,
                       thresholds_by_fpr: dict[float, float], brain_voxels: int,
                       created: str, checkpoint_step: int) -> dict:
  """A calibration file's contents: thresholds by healthy FPR, and the scans behind them.

  `checkpoint_step`: the model that scored the scans, the only one the thresholds fit.
  """
  fprs = list(thresholds_by_fpr)
  return {"name": name, "folder": folder, "scans": scans, "skipped": skipped,
          "checkpoint_step": checkpoint_step,
          "healthy_fprs": fprs,
          "thresholds": {threshold_name(f): v for f, v in thresholds_by_fpr.items()},
          "brain_voxels": brain_voxels, "created": created}


def save_calibration(workdir: str, record: dict) -> str:
  path = calibration_path(workdir, record["name"])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  atomic.write_json(path, record)
  return path


def calibration_threshold(workdir: str, name: str) -> Threshold:
  """The headline threshold of the calibration `name` of the model in `workdir`."""
  path = calibration_path(workdir, name)
  if not os.path.isfile(path):
    folder = os.path.join(workdir, CALIBRATION_DIR)
    known = sorted(f[:-5] for f in os.listdir(folder)
                   if f.endswith(".json")) if os.path.isdir(folder) else []
    raise UserError(f"no calibration {name!r} in {workdir} (known: {known or 'none'}): run "
                    f"python -m brainseg_jax.calibrate --workdir={workdir} --healthy=FOLDER "
                    f"--name={name}")
  record = _read_json(path)
  fprs = _field(record, "healthy_fprs", list, path)
  if not fprs:
    raise UserError(f"{path}: healthy_fprs is empty: calibrate again to rewrite it")
  fpr = _fraction({"healthy_fprs[0]": fprs[0]}, "healthy_fprs[0]", path)
  thresholds = _field(record, "thresholds", dict, path)
  value = _number(thresholds, threshold_name(fpr), path, "thresholds.")
  scans = _field(record, "scans", list, path)
  folder = _field(record, "folder", str, path)
  return Threshold(value, fpr, f"calibration {name!r}: {len(scans)} healthy scans of {folder}, "
                   f"healthy FPR {fpr:g}", _step(record, path))
