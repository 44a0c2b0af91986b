"""Voxel-wise segmentation and ranking metrics, exact, in numpy.

Conventions for empty cases (so that healthy volumes and empty predictions
never divide by zero silently):
  * dice: 1.0 when prediction and truth are both empty, else 2TP / (2TP+FP+FN);
  * sensitivity: NaN when the truth is empty (nothing to find);
  * precision: NaN when the prediction is empty (nothing claimed);
  * AUROC / AUPRC: NaN unless both classes are present.
NaNs are skipped when per-volume values are averaged.
"""

import numpy as np
from scipy import ndimage


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """[TP, FP, FN, TN] of a binary prediction; counts add up over volumes."""
  pred = np.asarray(pred, bool).ravel()
  truth = np.asarray(truth, bool).ravel()
  tp = np.count_nonzero(pred & truth)
  fp = np.count_nonzero(pred & ~truth)
  fn = np.count_nonzero(~pred & truth)
  return np.array([tp, fp, fn, pred.size - tp - fp - fn], np.int64)


def metrics_from_counts(counts: np.ndarray) -> dict[str, float]:
  """Dice, sensitivity, precision and accuracy from [TP, FP, FN, TN].

  Accuracy is reported because it is asked for, but it misleads: when lesions
  are 1 % of the brain, flagging nothing is 99 % accurate.
  """
  tp, fp, fn, tn = (int(c) for c in counts)
  total = tp + fp + fn + tn
  return {
      "dice": 1.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn),
      "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
      "precision": tp / (tp + fp) if tp + fp else float("nan"),
      "accuracy": (tp + tn) / total if total else float("nan"),
  }


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """Dice, sensitivity, precision and accuracy of a binary prediction."""
  return metrics_from_counts(confusion_counts(pred, truth))


def _cumulative_counts(scores: np.ndarray, labels: np.ndarray):
  """True and false positives when thresholding at each distinct score, high to low.

  Returns (tp, fp, thresholds): predicting `score >= thresholds[i]` gives
  tp[i] true and fp[i] false positives. Tied scores form one threshold.
  """
  scores = np.asarray(scores).ravel()
  labels = np.asarray(labels, bool).ravel()
  order = np.argsort(-scores, kind="stable")
  scores, labels = scores[order], labels[order]
  last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
  tp = np.cumsum(labels)[last_of_tie]
  fp = (last_of_tie + 1) - tp
  return tp, fp, scores[last_of_tie]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve (trapezoidal, so ties count one half)."""
  return _auroc(*_cumulative_counts(scores, labels))


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Average precision: sum over thresholds of (recall step) x precision."""
  return _auprc(*_cumulative_counts(scores, labels))


def best_dice(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
  """The highest Dice any single threshold reaches, and that threshold.

  This looks at the test labels, so it is an upper bound, not a result.
  """
  return _best_dice(*_cumulative_counts(scores, labels))


def _auroc(tp, fp, thresholds) -> float:
  del thresholds
  positives, negatives = (tp[-1], fp[-1]) if tp.size else (0, 0)
  if positives == 0 or negatives == 0:
    return float("nan")
  tpr = np.r_[0.0, tp / positives]
  fpr = np.r_[0.0, fp / negatives]
  return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _auprc(tp, fp, thresholds) -> float:
  del thresholds
  positives = tp[-1] if tp.size else 0
  if positives == 0 or fp[-1] == 0:
    return float("nan")
  recall = np.r_[0.0, tp / positives]
  return float(np.sum(np.diff(recall) * tp / (tp + fp)))


def _best_dice(tp, fp, thresholds) -> tuple[float, float]:
  positives = tp[-1] if tp.size else 0
  if positives == 0:
    return 1.0, float("inf")  # flagging nothing is perfect
  dice = 2 * tp / (tp + fp + positives)
  best = int(np.argmax(dice))
  return float(dice[best]), float(thresholds[best])


def threshold_at_fpr(healthy_scores: np.ndarray, fpr: float) -> float:
  """The score above which a fraction `fpr` of healthy voxels lies."""
  if not 0.0 < fpr < 1.0:
    raise ValueError(f"healthy false-positive rate must be in (0, 1), got {fpr}")
  healthy_scores = np.asarray(healthy_scores).ravel()
  if healthy_scores.size == 0:
    raise ValueError("no healthy voxels to calibrate the threshold on")
  return float(np.quantile(healthy_scores, 1.0 - fpr, method="higher"))


def ranking_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Exact AUROC, AUPRC and best Dice (upper bound) of one set of voxels, one sort for all."""
  counts = _cumulative_counts(scores, labels)
  best, threshold = _best_dice(*counts)
  return {"auroc": _auroc(*counts), "auprc": _auprc(*counts), "best_dice_upper_bound": best,
          "best_threshold_upper_bound": threshold}


class HistogramCurves:
  """ROC and PR curves of any number of voxels in bounded memory.

  Scores are counted into `num_bins` equal bins over [0, upper]; scores above
  `upper` fall into the last bin. Thresholds are the bins' lower edges, so all
  voxels within one bin act as ties. With 2^16 bins the AUROC and AUPRC differ
  from the exact values by less than 1e-3 in the tests (and the error shrinks
  with more bins); memory is two int64 arrays of `num_bins`, whatever the number
  of voxels.
  """

  def __init__(self, upper: float, num_bins: int = 2 ** 16):
    if not upper > 0:
      raise ValueError(f"histogram upper bound must be positive, got {upper}")
    self.upper, self.num_bins = float(upper), num_bins
    self.positives = np.zeros(num_bins, np.int64)
    self.negatives = np.zeros(num_bins, np.int64)

  def add(self, scores: np.ndarray, labels: np.ndarray):
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels, bool).ravel()
    bins = np.clip((scores / self.upper * self.num_bins).astype(np.int64), 0, self.num_bins - 1)
    self.positives += np.bincount(bins[labels], minlength=self.num_bins)
    self.negatives += np.bincount(bins[~labels], minlength=self.num_bins)

  def _counts(self):
    """(tp, fp, thresholds) at each occupied bin, high to low, as _cumulative_counts gives."""
    occupied = np.flatnonzero((self.positives + self.negatives)[::-1])
    tp = np.cumsum(self.positives[::-1])[occupied]
    fp = np.cumsum(self.negatives[::-1])[occupied]
    lower_edges = (np.arange(self.num_bins)[::-1] * self.upper / self.num_bins)[occupied]
    return tp, fp, lower_edges

  def auroc(self) -> float:
    return _auroc(*self._counts())

  def auprc(self) -> float:
    return _auprc(*self._counts())

  def best_dice(self) -> tuple[float, float]:
    return _best_dice(*self._counts())

  def curves(self) -> dict[str, np.ndarray]:
    """False-positive rate, true-positive rate (= recall) and precision per threshold."""
    tp, fp, _ = self._counts()
    positives, negatives = max(tp[-1], 1), max(fp[-1], 1)
    return {"fpr": np.r_[0.0, fp / negatives], "tpr": np.r_[0.0, tp / positives],
            "precision": np.r_[1.0, tp / np.maximum(tp + fp, 1)]}


# What counts as one lesion, everywhere (evaluation, post-processing, predict's report):
# voxels that share a face (6-connectivity in 3D). Face connectivity keeps two lesions
# that touch only at an edge or corner apart, as lesion-wise MS and WMH counts do.
LESION_CONNECTIVITY = ndimage.generate_binary_structure(3, 1)


def lesion_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
  """(labels, count) of the lesions in a 3D 0/1 mask, by LESION_CONNECTIVITY."""
  return ndimage.label(mask, structure=LESION_CONNECTIVITY)


def lesion_detection(prediction: np.ndarray, truth: np.ndarray) -> dict[str, int]:
  """Lesion-wise counts: a lesion (3D connected component of the truth) is found when
  any predicted voxel overlaps it; a predicted component touching no lesion is a false
  positive."""
  truth_labels, num_lesions = lesion_components(truth)
  pred_labels, num_predicted = lesion_components(prediction)
  found = np.unique(truth_labels[prediction & truth])
  hits = np.unique(pred_labels[prediction & truth])
  return {"lesions": int(num_lesions), "lesions_detected": int(np.count_nonzero(found)),
          "predicted_components": int(num_predicted),
          "false_positive_components": int(num_predicted - np.count_nonzero(hits))}
