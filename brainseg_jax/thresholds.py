"""Where a threshold comes from: the model's own evaluation, or a calibration on a new site.

Evaluation chooses the model's thresholds on its healthy validation split and
records them in metrics.json. A site that scans differently (another scanner,
sequence or protocol) can re-derive them from a few of its own healthy scans
(`python -m brainseg_jax.calibrate`); each calibration is stored by name in
`WORKDIR/calibrations/<name>.json`, beside the model's own, never over it.
"""

import dataclasses
import json
import os
import re

from brainseg_jax.errors import UserError
from data_prep import atomic

CALIBRATION_DIR = "calibrations"


@dataclasses.dataclass(frozen=True)
class Threshold:
  value: float
  healthy_fpr: float  # the fraction of healthy brain voxels it flags, by construction
  source: str  # in words, for reports


def from_model(workdir: str) -> Threshold:
  """The headline threshold evaluation chose on healthy validation data."""
  path = os.path.join(workdir, "metrics.json")
  if not os.path.isfile(path):
    raise UserError(f"{path} not found: run python -m brainseg_jax.eval first; its healthy "
                    "validation data sets the threshold")
  with open(path) as f:
    protocol = json.load(f)["protocol"]
  return Threshold(float(protocol["threshold"]), float(protocol["healthy_fpr"]),
                   f"model evaluation: {protocol['threshold_source']}, healthy FPR "
                   f"{protocol['healthy_fpr']:g}")


def calibration_path(workdir: str, name: str) -> str:
  if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
    raise UserError(f"calibration name {name!r}: use letters, digits, '_', '-' or '.'")
  return os.path.join(workdir, CALIBRATION_DIR, f"{name}.json")


def save_calibration(workdir: str, name: str, record: dict) -> str:
  path = calibration_path(workdir, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  atomic.write_json(path, record)
  return path


def from_calibration(workdir: str, name: str) -> Threshold:
  """The headline threshold of the calibration `name` of the model in `workdir`."""
  path = calibration_path(workdir, name)
  if not os.path.isfile(path):
    known = sorted(f[:-5] for f in os.listdir(os.path.join(workdir, CALIBRATION_DIR))
                   if f.endswith(".json")) if os.path.isdir(
                       os.path.join(workdir, CALIBRATION_DIR)) else []
    raise UserError(f"no calibration {name!r} in {workdir} (known: {known or 'none'}): run "
                    f"python -m brainseg_jax.calibrate --workdir={workdir} --healthy=FOLDER "
                    f"--name={name}")
  with open(path) as f:
    record = json.load(f)
  fpr = record["healthy_fprs"][0]
  return Threshold(float(record["thresholds"][f"fpr_{fpr:g}"]), float(fpr),
                   f"calibration {name!r}: {len(record['scans'])} healthy scans of "
                   f"{record['folder']}, healthy FPR {fpr:g}")
