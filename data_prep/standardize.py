"""Piecewise-linear histogram standardisation (Nyúl & Udupa 2000), inside the brain.

Percentile normalisation maps each scan's 1st and 99th brain percentiles to 0
and 1 but leaves everything in between as the scanner made it, so the same
tissue sits at different intensities on different scanners. Nyúl's method
also lines up the deciles: each scan's brain landmarks (percentiles 1, 10, 20,
..., 90, 99) are mapped piecewise-linearly onto a standard scale, the mean of
the training scans' landmarks (each rescaled so that its 1st and 99th
percentiles land on 0 and 1). Intensities below the first or above the last
landmark follow the end segments' slopes, so a lesion brighter than any
healthy tissue stays brighter.

Learned on the training scans' brains only (lesions left out where they are
labelled), stored with the model as JSON, and applied in the same way to every
scan the model sees: training slices, validation and test volumes, and new
scans in predict. Written here rather than taken from `intensity-normalization`:
its 3.x wheels (the newest on our index) pull in scikit-fuzzy and wrap arrays in
their own image protocol, for what is a percentile and an interpolation on the
arrays this pipeline already has.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from data_prep.atomic import write_json
from data_prep.errors import PrepError

PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)
# Standardised intensities are clipped here, as percentile normalisation clips (PrepConfig).
CLIP_MAX = 1.5


@dataclasses.dataclass(frozen=True)
class StandardScale:
  """The learned standard scale: where each landmark percentile goes."""

  percentiles: tuple[float, ...]
  scale: tuple[float, ...]
  num_scans: int

  def save(self, path: str) -> None:
    write_json(path, {"method": "nyul", **dataclasses.asdict(self)})

  @classmethod
  def load(cls, path: str) -> StandardScale:
    try:
      with open(path) as f:
        record = json.load(f)
      return cls(tuple(record["percentiles"]), tuple(record["scale"]), int(record["num_scans"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise PrepError(f"{path}: not a readable intensity standardisation record ({e})") from e


def landmarks(brain_values: np.ndarray, percentiles=PERCENTILES) -> np.ndarray:
  """The scan's landmark intensities: these percentiles of its brain voxels."""
  values = np.asarray(brain_values, np.float64).ravel()
  if values.size == 0:
    raise PrepError("intensity standardisation needs brain voxels; the brain mask is empty")
  return np.percentile(values, percentiles)


def fit(brains: list[np.ndarray], percentiles=PERCENTILES) -> StandardScale:
  """The standard scale of these scans (each given as its brain voxels' intensities)."""
  if not brains:
    raise PrepError("intensity standardisation needs at least one training scan")
  scaled = []
  for values in brains:
    marks = landmarks(values, percentiles)
    span = marks[-1] - marks[0]
    if span <= 0:
      raise PrepError("a training scan's brain has a single intensity; cannot standardise it")
    scaled.append((marks - marks[0]) / span)
  return StandardScale(tuple(float(p) for p in percentiles),
                       tuple(float(s) for s in np.mean(scaled, axis=0)), len(brains))


def apply(image: np.ndarray, brain: np.ndarray, standard: StandardScale,
          marks: np.ndarray | None = None) -> np.ndarray:
  """`image` mapped onto the standard scale by its scan's brain landmarks; 0 outside the brain.

  `brain` (bool, broadcastable to `image`) picks the voxels whose landmarks are
  measured: all of the scan's brain (at test time nobody knows where lesions
  are). `marks`: the scan's landmarks when `image` is only part of it (a slice).
  """
  brain = np.broadcast_to(np.asarray(brain, bool), image.shape)
  if marks is None:
    marks = landmarks(image[brain], standard.percentiles)
  scale = np.asarray(standard.scale)
  # Strictly increasing landmarks: flat stretches (many voxels of one value) would divide by 0.
  marks = np.maximum.accumulate(marks + np.arange(len(marks)) * 1e-6)
  mapped = np.interp(image, marks, scale)
  low_slope = (scale[1] - scale[0]) / (marks[1] - marks[0])
  high_slope = (scale[-1] - scale[-2]) / (marks[-1] - marks[-2])
  mapped = np.where(image < marks[0], scale[0] + (image - marks[0]) * low_slope, mapped)
  mapped = np.where(image > marks[-1], scale[-1] + (image - marks[-1]) * high_slope, mapped)
  return np.where(brain, np.clip(mapped, 0.0, CLIP_MAX), 0.0).astype(np.float32)
