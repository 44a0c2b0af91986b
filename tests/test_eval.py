"""eval's thresholds come from the validation split alone: healthy voxels, and its lesion labels.

Runs the real evaluation of the intensity baseline (nothing to train) on the tiny LGG fixture,
whose validation patient carries a tumour label.
"""

import numpy as np
import pytest

from brainseg_jax import evaluation
from brainseg_jax.datasets import input_pipeline
from configs import threshold
from tests.datasets import lgg_fixture

pytestmark = pytest.mark.slow  # builds the LGG fixture and evaluates


@pytest.fixture
def lgg_config(tmp_path, monkeypatch):
  dataset, _ = lgg_fixture.build(tmp_path, monkeypatch)
  config = threshold.get_config()
  config.dataset = dataset
  config.eval.write_nifti = False
  config.eval.num_figure_volumes = 0
  return config


def _with_labels_changed(monkeypatch, split: str):
  """Make load_volumes hand out `split` with its lesion labels moved 6 voxels."""
  real = input_pipeline.load_volumes

  def load_volumes(builder, wanted, *args, **kwargs):
    volumes = real(builder, wanted, *args, **kwargs)
    if wanted != split:
      return volumes
    moved = []
    for v in volumes:
      mask = np.roll(v.anomaly_mask, 6, axis=1)
      moved.append(input_pipeline.Volume(v.subject_id, v.anomaly_type, v.image, v.brain_mask,
                                         mask))
    return moved

  monkeypatch.setattr(input_pipeline, "load_volumes", load_volumes)


def test_validation_thresholds_never_read_test_labels(lgg_config, tmp_path,
                                                               monkeypatch):
  first = evaluation.evaluate(lgg_config, str(tmp_path / "a"))
  thresholds = first["protocol"]["thresholds"]
  assert set(thresholds) == {"fpr_0.01", "fpr_0.05", "fpr_0.1", "labelled_validation"}
  assert "labelled_validation" in first["pooled"]["all"]
  # The validation brain leaves the tumour out (for the healthy threshold), yet the labelled
  # threshold must see it: the fixture's tumour is the brightest tissue, easy to segment.
  assert first["protocol"]["validation_best_dice"] > 0.8
  assert thresholds["labelled_validation"] > 0
  # The per-scan adaptive thresholds: a k per healthy FPR, set on validation alone too.
  ks = first["protocol"]["adaptive_thresholds"]
  assert set(ks) == {"adaptive_fpr_0.01", "adaptive_fpr_0.05", "adaptive_fpr_0.1"}
  assert ks["adaptive_fpr_0.01"] > ks["adaptive_fpr_0.1"]
  assert 0 <= first["pooled"]["all"]["adaptive_fpr_0.01"]["dice"] <= 1
  assert "dice_adaptive_fpr_0.01" in next(iter(first["per_volume"].values()))
  _with_labels_changed(monkeypatch, "test")
  second = evaluation.evaluate(lgg_config, str(tmp_path / "b"))
  assert second["protocol"]["thresholds"] == thresholds
  assert second["protocol"]["adaptive_thresholds"] == ks
  # the test labels did change what is measured
  assert second["pooled"]["all"]["auroc"] != first["pooled"]["all"]["auroc"]


def test_labelled_validation_threshold_follows_the_validation_labels(lgg_config, tmp_path,
                                                                     monkeypatch):
  first = evaluation.evaluate(lgg_config, str(tmp_path / "a"))["protocol"]["thresholds"]
  _with_labels_changed(monkeypatch, "validation")
  second = evaluation.evaluate(lgg_config, str(tmp_path / "b"))["protocol"]["thresholds"]
  assert second["labelled_validation"] != first["labelled_validation"]


def test_lesion_free_protocol_takes_the_healthy_threshold_from_lesion_free_slices(
    lgg_config, tmp_path):
  every = evaluation.evaluate(lgg_config, str(tmp_path / "a"))
  lgg_config.dataset.train_slices = "lesion_free"
  lesion_free = evaluation.evaluate(lgg_config, str(tmp_path / "b"))
  assert lesion_free["protocol"]["train_slices"] == "lesion_free"
  # The fixture's FLAIR brightens slice by slice, and the lesion-free slices leave out the
  # middle of the head: the healthy quantile moves.
  assert lesion_free["protocol"]["thresholds"]["fpr_0.1"] != every["protocol"]["thresholds"][
      "fpr_0.1"]


def test_another_dataset_is_scored_whole_with_every_split(lgg_config, tmp_path):
  lgg_config.eval.test_dataset = "lgg"
  lgg_config.eval.test_manual_dir = lgg_config.dataset.manual_dir
  lgg_config.eval.test_splits = ("train", "validation", "test")
  result = evaluation.evaluate(lgg_config, str(tmp_path / "a"))
  patients = {name.split("_2000")[0]: m for name, m in result["per_volume"].items()}
  assert sorted(patients) == sorted([lgg_fixture.TRAIN, lgg_fixture.TEST,
                                     lgg_fixture.VALIDATION])
  assert result["test_splits"] == ["train", "validation", "test"]
  # The validation patient's tumour is cut out of its stored brain mask; scored as a test
  # volume it is brain again, and found (the fixture's tumour is the brightest tissue).
  assert patients[lgg_fixture.VALIDATION]["sensitivity"] > 0.5
