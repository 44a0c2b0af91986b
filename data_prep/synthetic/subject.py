"""One synthetic subject from a seed: anatomy, then anomaly, then contrast.

Every subject is a pure function of ``seed``: the seed drives one
:func:`numpy.random.default_rng`, which only hands out independent sub-seeds
for the anatomy, for each anomaly type and for each modality.  Because the
streams are independent, ``make_subject(t, s, m, "ms")`` and
``make_subject(t, s, m, "none")`` share the same anatomy, contrast jitter, bias
field and noise realisation: the healthy subject is the exact counterfactual of
the pathological one (only the lesion, and for a glioma its mass effect,
differ), and the same seed in another modality gives the same anatomy and
lesions, i.e. a consistent multi-modal subject.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_prep.synthetic import anatomy, contrast, lesions
from data_prep.synthetic.contrast import MODALITIES
from data_prep.synthetic.lesions import ANOMALIES


@dataclasses.dataclass(frozen=True)
class Subject:
  """One synthetic scan with its exact ground truth.

  ``image`` is float32, 0 outside ``brain_mask`` and roughly in [0, 1]
  inside (clipped to [0, 1.5]); ``brain_mask`` and ``anomaly_mask`` are
  uint8 0/1 and ``anomaly_mask`` is always inside ``brain_mask``.
  """

  image: np.ndarray
  brain_mask: np.ndarray
  anomaly_mask: np.ndarray
  modality: str
  anomaly: str


def make_subject(
  template: anatomy.Template, seed: int, modality: str = "flair", anomaly: str = "none"
) -> Subject:
  """Generate one synthetic subject; bit-identical for identical arguments.

  Pipeline: random anatomy (affine + elastic, one linear resampling of the
  tissue maps), optional anomaly with exact mask, then the tissue-weighted
  contrast with bias field and noise, zero outside the brain.
  """
  if modality not in MODALITIES:
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
  if anomaly not in ANOMALIES:
    raise ValueError(f"anomaly must be one of {ANOMALIES}, got {anomaly!r}")
  anatomy_rng, anomaly_rng, contrast_rng = _streams(seed, modality, anomaly)

  shape = template.gm.shape
  spacing = np.asarray(template.spacing_mm, dtype=np.float64)
  warp = anatomy.random_warp(anatomy_rng, shape, spacing)
  tissues = anatomy.sample_tissues(template, warp.grid_source_coords())
  brain_mask = (tissues["gm"] + tissues["wm"] + tissues["csf"]) > 0.5
  anomaly_mask = lesions.paint(anomaly, anomaly_rng, template, warp, tissues, brain_mask, spacing)
  image = contrast.render(contrast_rng, modality, tissues, brain_mask)

  return Subject(
    image=image.astype(np.float32, copy=False),
    brain_mask=brain_mask.astype(np.uint8),
    anomaly_mask=(anomaly_mask & brain_mask).astype(np.uint8),
    modality=modality,
    anomaly=anomaly,
  )


def _streams(seed: int, modality: str, anomaly: str) -> tuple[np.random.Generator, ...]:
  """Independent (anatomy, anomaly, contrast) generators; see the module docstring."""
  root = np.random.default_rng(seed)
  stream_seeds = root.integers(0, 2**63 - 1, size=1 + len(ANOMALIES) + len(MODALITIES))
  anatomy_rng = np.random.default_rng(stream_seeds[0])
  anomaly_rng = np.random.default_rng(stream_seeds[1 + ANOMALIES.index(anomaly)])
  contrast_rng = np.random.default_rng(
    stream_seeds[1 + len(ANOMALIES) + MODALITIES.index(modality)]
  )
  return anatomy_rng, anomaly_rng, contrast_rng
