"""Per-scan adaptive thresholds: each scan judged against its own anomaly-map distribution.

A threshold fixed on the training site's healthy validation brains assumes a
new scan's anomaly map has the same scale. Another scanner, another contrast,
another bias field shift every score, and a fixed cut-off then flags far more
or far fewer voxels than it promised. An adaptive threshold needs no label of
the new site: it rescales each scan's map by statistics of the map itself,
inside the scan's brain,

    z = (score - median) / spread,

and flags z > k. The spread is the standard deviation of the scores at or
below their 90th percentile: a lesion of a few percent of the brain lies
above it and barely moves it (3 % moves the threshold by about 6 %, 10 % by
30 %), and unlike the MAD or the IQR it is not zero for one-sided maps (a
positive residual is zero over much of a brain the model reconstructs well).
k is set the way the fixed thresholds are: the z that flags a fraction
`healthy_fpr` of the healthy validation voxels, each validation scan z-scored
against its own whole brain, as a test scan will be.
"""

import numpy as np

BULK_QUANTILE = 0.9  # the spread is measured on the scores at or below this quantile


def name(healthy_fpr: float) -> str:
  """The threshold's name in metrics and tables: adaptive_fpr_0.01."""
  return f"adaptive_fpr_{healthy_fpr:g}"


def centre_and_spread(brain_scores: np.ndarray) -> tuple[float, float]:
  """(median, standard deviation of the lower 90 %) of a scan's scores inside its brain.

  A scan whose map is constant over 90 % of its brain has no spread to judge
  by; its spread is then the smallest positive float, so only scores above
  the median can be flagged, never a whole brain.
  """
  tiny = float(np.finfo(np.float32).tiny)
  if brain_scores.size == 0:
    return 0.0, tiny
  centre, bulk = np.quantile(brain_scores, (0.5, BULK_QUANTILE))
  spread = float(brain_scores[brain_scores <= bulk].std())
  return float(centre), max(spread, tiny)


def z_scores(scores: np.ndarray, brain_scores: np.ndarray) -> np.ndarray:
  """`scores` in units of the scan's own spread above its median (`brain_scores`: whole brain)."""
  centre, spread = centre_and_spread(brain_scores)
  return (scores - centre) / spread


def scan_thresholds(brain_scores: np.ndarray, ks: dict[str, float]) -> dict[str, float]:
  """{name: the score above which this scan's voxels are flagged}, median + k * spread for
  each k of `ks`; the scan's statistics are taken once."""
  centre, spread = centre_and_spread(brain_scores)
  return {name: centre + k * spread for name, k in ks.items()}


def scan_threshold(brain_scores: np.ndarray, k: float) -> float:
  """The score above which this scan's voxels are flagged: median + k * spread."""
  return scan_thresholds(brain_scores, {"k": k})["k"]
