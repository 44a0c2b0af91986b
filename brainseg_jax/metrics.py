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


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """Dice, sensitivity, precision and accuracy of a binary prediction."""
  pred = np.asarray(pred, bool).ravel()
  truth = np.asarray(truth, bool).ravel()
  tp = int(np.count_nonzero(pred & truth))
  fp = int(np.count_nonzero(pred & ~truth))
  fn = int(np.count_nonzero(~pred & truth))
  tn = pred.size - tp - fp - fn
  denominator = 2 * tp + fp + fn
  return {
      "dice": 1.0 if denominator == 0 else 2 * tp / denominator,
      "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
      "precision": tp / (tp + fp) if tp + fp else float("nan"),
      "accuracy": (tp + tn) / pred.size if pred.size else float("nan"),
  }


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


def all_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
  """Every reported metric for one set of voxels (one volume, or all pooled)."""
  result = segmentation_metrics(scores > threshold, labels)
  counts = _cumulative_counts(scores, labels)  # one sort serves all three
  result["auroc"] = _auroc(*counts)
  result["auprc"] = _auprc(*counts)
  result["best_dice_upper_bound"], result["best_threshold_upper_bound"] = _best_dice(*counts)
  return result
