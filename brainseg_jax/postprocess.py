"""Post-processing of anomaly maps: every step a config switch, off by default.

Published numbers in this field often hide such steps; here each one is named
in the config and in the run's metrics, and evaluation reports what each changes.
All steps work on whole 3D volumes (slices, height, width).
"""

import ml_collections
import numpy as np
from scipy import ndimage

from brainseg_jax import metrics


def clean_map(anomaly: np.ndarray, image: np.ndarray, brain: np.ndarray,
              config: ml_collections.ConfigDict) -> np.ndarray:
  """Median filter, brain-mask erosion and low-intensity zeroing of one volume's map."""
  anomaly = np.asarray(anomaly, np.float32)
  if config.median_filter_size > 1:
    k = config.median_filter_size
    size = (1, k, k) if config.median_filter_dims == 2 else (k, k, k)
    anomaly = ndimage.median_filter(anomaly, size=size)
  keep = brain
  if config.brain_erosion > 0:
    # Reconstruction error concentrates at the brain's edge, rarely lesion tissue.
    keep = ndimage.binary_erosion(brain, iterations=config.brain_erosion)
  if config.low_intensity_percentile > 0 and brain.any():
    # Dark voxels (CSF, background-like) cannot hold hyperintense lesions.
    cut = np.percentile(image[brain], config.low_intensity_percentile)
    keep = keep & (image >= cut)
  return np.where(keep, anomaly, 0.0).astype(np.float32)


def clean_prediction(prediction: np.ndarray, min_component_size: int) -> np.ndarray:
  """Removes 3D connected components smaller than `min_component_size` voxels."""
  if min_component_size <= 1 or not prediction.any():
    return prediction
  labels, count = metrics.lesion_components(prediction)
  sizes = np.bincount(labels.ravel(), minlength=count + 1)
  keep = sizes >= min_component_size
  keep[0] = False
  return keep[labels]


def active_switches(config: ml_collections.ConfigDict) -> list[str]:
  """Names of the post-processing steps this config turns on."""
  active = []
  if config.median_filter_size > 1:
    active.append(f"median_filter_{config.median_filter_dims}d_{config.median_filter_size}")
  if config.brain_erosion > 0:
    active.append(f"brain_erosion_{config.brain_erosion}")
  if config.low_intensity_percentile > 0:
    active.append(f"low_intensity_percentile_{config.low_intensity_percentile}")
  if config.min_component_size > 1:
    active.append(f"min_component_size_{config.min_component_size}")
  return active
