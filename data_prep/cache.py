"""Per-volume cache of preprocessed results (.npz), written atomically.

Rebuilding a dataset (another interruption, a new split, a schema change)
should not redo registration: `runner` skips every volume whose cache file
exists. Files are written to a temporary name and renamed, so an interrupted
worker never leaves a truncated file that a rerun would trust.
"""

import os

import numpy as np

from data_prep.atomic import atomic_path
from data_prep.pipeline import Preprocessed, VolumeRecord
from data_prep.qc import RegistrationQC


def path_for(work_dir: str, subject_id: str) -> str:
  return os.path.join(work_dir, subject_id.replace(os.sep, "_") + ".npz")


def save(path: str, result: Preprocessed) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with atomic_path(path) as tmp:
    np.savez_compressed(tmp, image=result.image, brain_mask=result.brain_mask,
                        anomaly_mask=result.anomaly_mask, notes=np.asarray(result.notes, str),
                        **({"extra": result.extra} if result.extra is not None else {}),
                        **result.record.to_arrays(),
                        **(result.qc.to_arrays() if result.qc is not None else {}))


def needs_new_qc(path: str, config) -> bool:
  """True for a registered volume cached before today's QC measures (they are missing)."""
  if config.registration != "affine":
    return False
  with np.load(path) as f:
    return RegistrationQC.from_arrays(f) is None


def load(path: str) -> Preprocessed:
  with np.load(path) as f:
    return Preprocessed(image=f["image"], brain_mask=f["brain_mask"],
                        anomaly_mask=f["anomaly_mask"], record=VolumeRecord.from_arrays(f),
                        notes=tuple(str(n) for n in f["notes"]), qc=RegistrationQC.from_arrays(f),
                        extra=f["extra"] if "extra" in f else None)
