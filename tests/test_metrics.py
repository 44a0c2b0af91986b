import math

import numpy as np
import pytest

from brainseg_jax import metrics


def test_segmentation_metrics_hand_computed():
  truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
  pred = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)  # TP 2, FN 1, FP 1, TN 4
  m = metrics.segmentation_metrics(pred, truth)
  assert m["dice"] == pytest.approx(4 / 6)
  assert m["sensitivity"] == pytest.approx(2 / 3)
  assert m["precision"] == pytest.approx(2 / 3)
  assert m["accuracy"] == pytest.approx(6 / 8)


def test_empty_cases():
  empty = np.zeros(5, bool)
  some = np.array([1, 0, 0, 0, 0], bool)
  both_empty = metrics.segmentation_metrics(empty, empty)
  assert both_empty["dice"] == 1.0 and both_empty["accuracy"] == 1.0
  assert math.isnan(both_empty["sensitivity"]) and math.isnan(both_empty["precision"])
  missed = metrics.segmentation_metrics(empty, some)
  assert missed["dice"] == 0.0 and missed["sensitivity"] == 0.0 and math.isnan(missed["precision"])
  false_alarm = metrics.segmentation_metrics(some, empty)
  assert false_alarm["dice"] == 0.0 and false_alarm["precision"] == 0.0
  assert math.isnan(false_alarm["sensitivity"])


def test_auroc_hand_computed_with_ties():
  # positives score 0.9 and 0.5, negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1,
  # 0.5=0.5 -> 1/2, 0.5>0.1) -> 3.5 / 4
  scores = np.array([0.9, 0.5, 0.5, 0.1])
  labels = np.array([1, 1, 0, 0], bool)
  assert metrics.auroc(scores, labels) == pytest.approx(3.5 / 4)


def test_auroc_matches_pairwise_definition_on_random_data():
  rng = np.random.default_rng(0)
  scores = np.round(rng.random(300), 2)  # many ties
  labels = rng.random(300) < 0.3
  pos, neg = scores[labels], scores[~labels]
  pairwise = (np.sum(pos[:, None] > neg[None]) + 0.5 * np.sum(pos[:, None] == neg[None]))
  assert metrics.auroc(scores, labels) == pytest.approx(pairwise / (pos.size * neg.size))


def test_auprc_hand_computed():
  # ranked: + - + - : precision at each positive 1/1, 2/3 -> AP = (1 + 2/3) / 2
  scores = np.array([0.9, 0.8, 0.7, 0.6])
  labels = np.array([1, 0, 1, 0], bool)
  assert metrics.auprc(scores, labels) == pytest.approx((1 + 2 / 3) / 2)
  assert metrics.auprc(np.array([0.2, 0.1]), np.array([1, 0], bool)) == 1.0


def test_ranking_metrics_undefined_with_one_class():
  assert math.isnan(metrics.auroc(np.array([0.1, 0.2]), np.array([0, 0], bool)))
  assert math.isnan(metrics.auprc(np.array([0.1, 0.2]), np.array([1, 1], bool)))


def test_best_dice_sweeps_every_threshold():
  scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
  labels = np.array([1, 0, 1, 1, 0], bool)
  # thresholds >=0.9: 2/4; >=0.8: 2/5; >=0.7: 4/6; >=0.6: 6/7; >=0.1: 6/8
  dice, threshold = metrics.best_dice(scores, labels)
  assert dice == pytest.approx(6 / 7)
  assert threshold == pytest.approx(0.6)
  assert metrics.best_dice(scores, np.zeros(5, bool))[0] == 1.0


def test_threshold_at_fpr_flags_that_fraction_of_healthy_voxels():
  healthy = np.arange(1000, dtype=float)
  threshold = metrics.threshold_at_fpr(healthy, 0.05)
  assert 0.048 <= np.mean(healthy > threshold) <= 0.05
  with pytest.raises(ValueError, match="false-positive rate"):
    metrics.threshold_at_fpr(healthy, 0.0)


def test_ranking_metrics_agree_with_the_single_functions():
  rng = np.random.default_rng(1)
  scores, labels = rng.random(500), rng.random(500) < 0.2
  m = metrics.ranking_metrics(scores, labels)
  assert m["auroc"] == metrics.auroc(scores, labels)
  assert m["auprc"] == metrics.auprc(scores, labels)
  assert m["best_dice_upper_bound"] == metrics.best_dice(scores, labels)[0]


def test_counts_add_up_over_volumes():
  a = metrics.confusion_counts(np.array([1, 0, 1], bool), np.array([1, 1, 0], bool))
  b = metrics.confusion_counts(np.array([0, 0], bool), np.array([0, 1], bool))
  np.testing.assert_array_equal(a, [1, 1, 1, 0])
  pooled = metrics.metrics_from_counts(a + b)
  assert pooled["dice"] == pytest.approx(2 / 5)
  assert pooled["accuracy"] == pytest.approx(2 / 5)


def test_histogram_curves_match_exact_computation_within_stated_error():
  rng = np.random.default_rng(2)
  curves = metrics.HistogramCurves(upper=4.0)
  all_scores, all_labels = [], []
  for _ in range(5):  # added volume by volume
    labels = rng.random(20_000) < 0.03
    scores = np.abs(rng.normal(0.3, 0.1, labels.size)) + labels * rng.gamma(2.0, 0.15, labels.size)
    curves.add(scores, labels)
    all_scores.append(scores)
    all_labels.append(labels)
  scores, labels = np.concatenate(all_scores), np.concatenate(all_labels)
  assert abs(curves.auroc() - metrics.auroc(scores, labels)) < 1e-3
  assert abs(curves.auprc() - metrics.auprc(scores, labels)) < 1e-3
  assert abs(curves.best_dice()[0] - metrics.best_dice(scores, labels)[0]) < 1e-3
  assert curves.positives.nbytes + curves.negatives.nbytes == 2 * 8 * 2 ** 16  # bounded


def test_lesion_detection_counts_components():
  truth = np.zeros((3, 10, 10), bool)
  truth[1, 1:3, 1:3] = True  # lesion A
  truth[1, 6:9, 6:9] = True  # lesion B
  pred = np.zeros_like(truth)
  pred[1, 2, 2] = True  # touches A
  pred[0, 5, 0] = True  # a false-positive component
  counts = metrics.lesion_detection(pred, truth)
  assert counts == {"lesions": 2, "lesions_detected": 1, "predicted_components": 2,
                    "false_positive_components": 1}
