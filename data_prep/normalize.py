"""Intensity normalisation inside the brain mask.

Percentile scaling: the p_low and p_high percentiles of the brain voxels map to
0 and 1, clipped to [0, clip_max] (headroom for bright lesions, as in the
synthetic data), and everything outside the brain is 0. It expects a brain
mask, never "voxel > 0": background may be negative (z-scored scans) or
non-zero (interpolation), and the mask is what defines the brain.
"""

import numpy as np


def percentile_scale(image: np.ndarray, brain: np.ndarray, percentiles=(1.0, 99.0),
                     clip_max: float = 1.5) -> np.ndarray:
  brain = np.asarray(brain, bool)
  if not brain.any():
    raise ValueError("empty brain mask: nothing to normalise")
  lo, hi = np.percentile(image[brain], percentiles)
  scale = hi - lo if hi > lo else 1.0
  out = np.clip((image - lo) / scale, 0.0, clip_max).astype(np.float32)
  out[~brain] = 0.0
  return out
