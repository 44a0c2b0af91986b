"""MR contrast: tissue fractions to a FLAIR, T1 or T2 image with bias field and Rician noise.

Each voxel's intensity is the fraction-weighted mean of its tissues' intensities, so partial
volume at tissue and lesion borders comes for free. Per-subject jitter of those means, a smooth
multiplicative bias field and magnitude (Rician) noise give the variation a model must tolerate.
"""

from __future__ import annotations

import numpy as np

MODALITIES = ("flair", "t1", "t2")

# Relative mean intensities (WM/GM/CSF ordering and lesion behaviour follow
# clinical appearance; absolute values are arbitrary but kept in [0, 1]).
_CHANNELS = ("csf", "gm", "wm", "lesion", "oedema", "enhancing", "necrosis")
_MEAN_INTENSITY = {
  "flair": {
    "csf": 0.10,
    "gm": 0.65,
    "wm": 0.50,
    "lesion": 0.95,
    "oedema": 0.92,
    "enhancing": 0.80,
    "necrosis": 0.40,
  },
  "t1": {
    "csf": 0.15,
    "gm": 0.55,
    "wm": 0.85,
    "lesion": 0.30,
    "oedema": 0.40,
    "enhancing": 0.50,
    "necrosis": 0.20,
  },
  "t2": {
    "csf": 1.00,
    "gm": 0.60,
    "wm": 0.45,
    "lesion": 0.85,
    "oedema": 0.90,
    "enhancing": 0.70,
    "necrosis": 0.95,
  },
}
_INTENSITY_JITTER = 0.05  # +-5 % per subject and tissue
_CLIP_MAX = 1.5  # headroom for bias field x bright lesions + noise


def render(
  rng: np.random.Generator, modality: str, tissues: dict[str, np.ndarray], brain_mask: np.ndarray
) -> np.ndarray:
  """The ``modality`` image of ``tissues``: 0 outside ``brain_mask``, clipped to [0, 1.5].

  Tissue means get +-5 % per-subject jitter, then a multiplicative bias field
  and Rician noise (sigma 2-3 % of the WM intensity) are applied.
  """
  means = _jittered_means(rng, modality)
  shape = brain_mask.shape
  image = np.zeros(shape, dtype=np.float32)
  for name, vol in tissues.items():
    image += np.float32(means[name]) * vol

  image *= _bias_field(rng, shape)
  sigma = np.float32(rng.uniform(0.02, 0.03) * means["wm"])
  noise = rng.standard_normal((2, *shape), dtype=np.float32) * sigma
  image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)
  image[~brain_mask] = 0.0
  np.clip(image, 0.0, _CLIP_MAX, out=image)
  return image


def _jittered_means(rng: np.random.Generator, modality: str) -> dict[str, float]:
  # Draw the jitter for every channel (fixed order) so the stream, hence the
  # bias field and noise, do not depend on which anomaly is present.
  jitter = 1.0 + rng.uniform(-_INTENSITY_JITTER, _INTENSITY_JITTER, len(_CHANNELS))
  return {c: _MEAN_INTENSITY[modality][c] * j for c, j in zip(_CHANNELS, jitter, strict=True)}


def _bias_field(rng: np.random.Generator, shape) -> np.ndarray:
  """exp of a random quadratic polynomial, peak |log| in 0.10-0.15 (+-10-15 %).

  Quadratic is enough to mimic coil sensitivity, which is smooth on the scale
  of the head, and is cheap to evaluate by broadcasting.
  """
  x, y, z = (
    np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape([-1 if k == i else 1 for k in range(3)])
    for i, n in enumerate(shape)
  )
  coef = rng.standard_normal(9).astype(np.float32)
  amplitude = rng.uniform(0.10, 0.15)
  terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
  field = np.zeros(shape, dtype=np.float32)
  for c, t in zip(coef, terms, strict=True):
    field += c * t
  field -= field.mean()
  field *= amplitude / max(float(np.abs(field).max()), 1e-6)
  return np.exp(field)
