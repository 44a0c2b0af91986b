"""Evaluation: anomaly maps for every test volume, scored against the truth.

The command is brainseg_jax/eval.py (`python -m brainseg_jax.eval`). The
protocol keeps the test labels out of every choice: each threshold is the
score that flags a fraction `eval.healthy_fprs` of the voxels of the healthy
validation brains (the first is the headline); where the validation volumes
carry lesion labels, the threshold of best validation Dice is reported beside
it (`workdir.LABELLED`, what most papers report). Every post-processing step is a
switch in `eval.postprocess`, recorded in the run's metrics. The best Dice over all
thresholds is reported too, labelled as the upper bound it is, since it is
chosen by looking at the test labels. Test volumes are scored one at a time and
only counts are kept, so memory does not grow with the test set.
"""

import dataclasses
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from brainseg_jax import adaptive, metrics, postprocess, scoring, standardization
from brainseg_jax import config as config_lib
from brainseg_jax import outputs as outputs_lib
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.datasets import input_pipeline, schema
from brainseg_jax.errors import UserError
from brainseg_jax.workdir import LABELLED


class _Group:
  """Pooled results of a group of test volumes, accumulated one volume at a time.

  Memory stays bounded however many volumes there are: confusion counts per
  threshold, lesion counts, a score histogram, and a few numbers per volume.
  """

  def __init__(self, upper: float, threshold_names):
    self.curves = metrics.HistogramCurves(upper)
    self.confusion = {name: np.zeros(4, np.int64) for name in threshold_names}
    self.lesions = {name: np.zeros(len(_LESION_KEYS), np.int64) for name in threshold_names}
    self.volume_metrics = []

  def add(self, scores, truth, counts_by_threshold, lesions_by_threshold, volume_metrics):
    self.curves.add(scores, truth)
    for name in self.confusion:
      self.confusion[name] += counts_by_threshold[name]
      self.lesions[name] += [lesions_by_threshold[name][k] for k in _LESION_KEYS]
    self.volume_metrics.append(volume_metrics)

  def summary(self) -> dict:
    names = list(self.confusion)
    result = {name: self._at(name) for name in names}
    result.update(result[names[0]])  # the headline threshold, at the top level
    result["auroc"] = self.curves.auroc()
    result["auprc"] = self.curves.auprc()
    result["best_dice_upper_bound"] = self.curves.best_dice()[0]
    for key in ("dice", "auroc", "auprc"):
      values = [m[key] for m in self.volume_metrics]
      result[f"mean_volume_{key}"] = float(np.nanmean(values)) if values else float("nan")
    result["num_volumes"] = len(self.volume_metrics)
    return result

  def _at(self, name) -> dict:
    out = metrics.metrics_from_counts(self.confusion[name])
    lesions, detected, predicted, false_positive = (int(v) for v in self.lesions[name])
    out["lesion_sensitivity"] = detected / lesions if lesions else float("nan")
    out.update(lesions=lesions, predicted_components=predicted,
               false_positive_components=false_positive)
    return out


_LESION_KEYS = ("lesions", "lesions_detected", "predicted_components",
                "false_positive_components")


def _slice_scores(model, state, volume, anomaly):
  """One score per slice: the family's own (f-AnoGAN), else the mean map inside the brain."""
  if model.slice_score is not None:
    return np.asarray(jax.jit(model.slice_score)(state, volume.image))
  brain = volume.brain_mask[..., 0]
  return anomaly.sum(axis=(1, 2)) / np.maximum(brain.sum(axis=(1, 2)), 1)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Scores validation and test volumes; writes metrics, tables, figures and NIfTI maps."""
  workdir = workdir_lib.ensure_writable(workdir)
  config_lib.check(config)
  with workdir_lib.exclusive(workdir):
    return _evaluate(config, workdir)


def _evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  scorer, state, step = scoring.restore_scorer(config, workdir)
  model = scorer.model
  builder = input_pipeline.get_builder(config.dataset)
  post = config.eval.postprocess
  fprs = tuple(config.eval.healthy_fprs)
  start = time.time()

  # 1. Thresholds from validation volumes only: healthy brain voxels (and labelled lesions).
  standard = standardization.for_run(config, workdir, builder)
  thresholds, adaptive_ks, histogram_upper, validation_dice = validation_thresholds(
      scorer, state, input_pipeline.load_volumes(builder, "validation", standard), config)
  headline = next(iter(thresholds))
  threshold_names = [*thresholds, *adaptive_ks]

  # 2. Test volumes one at a time; only counts and small summaries accumulate.
  test_builder = test_split_builder(config, builder)
  outputs = (outputs_lib.EvalOutputs(workdir, test_builder, config.eval)
             if jax.process_index() == 0 else None)
  groups = {"all": _Group(histogram_upper, threshold_names)}
  per_volume, slice_scores, slice_labels = {}, [], []
  for volume in test_volumes(test_builder, config.eval.test_splits, standard):
    recon, anomaly = scoring.anomaly_maps(scorer, state, volume, post)
    brain, truth = volume.brain_mask[..., 0], volume.anomaly_mask[..., 0]
    scan_thresholds = {**thresholds, **adaptive.scan_thresholds(anomaly[brain], adaptive_ks)}
    predictions = {name: postprocess.clean_prediction(anomaly > value, post.min_component_size)
                   for name, value in scan_thresholds.items()}
    counts = {name: metrics.confusion_counts(p[brain], truth[brain])
              for name, p in predictions.items()}
    lesions = {name: metrics.lesion_detection(p, truth) for name, p in predictions.items()}
    volume_metrics = {"anomaly_type": volume.anomaly_type,
                      **metrics.metrics_from_counts(counts[headline]), **lesions[headline],
                      **metrics.ranking_metrics(anomaly[brain], truth[brain])}
    for name in (LABELLED, *adaptive_ks):
      if name in counts:
        volume_metrics[f"dice_{name}"] = metrics.metrics_from_counts(counts[name])["dice"]
    per_volume[volume.subject_id] = volume_metrics
    for name in ("all", volume.anomaly_type):
      if name not in groups:
        groups[name] = _Group(histogram_upper, threshold_names)
      groups[name].add(anomaly[brain], truth[brain], counts, lesions, volume_metrics)
    slice_scores.append(_slice_scores(model, state, volume, anomaly))
    slice_labels.append(truth.any(axis=(1, 2)))
    if outputs is not None:
      outputs.add_volume(volume, recon, anomaly, predictions[headline], thresholds[headline])

  pooled = {name: group.summary() for name, group in sorted(groups.items())}
  pooled["all"]["slice_auroc"] = metrics.auroc(np.concatenate(slice_scores),
                                               np.concatenate(slice_labels))
  result = {
      "dataset": f"{config.dataset.name}/"
                 + schema.variant_name(config_lib.modalities(config.dataset),
                                       config.dataset.resolution),
      "test_dataset": config.eval.test_dataset or config.dataset.name,
      "test_splits": list(config.eval.test_splits),
      "model": config.model.name,
      "checkpoint_step": step,
      "protocol": {
          "threshold": thresholds[headline],
          "thresholds": thresholds,
          "adaptive_thresholds": adaptive_ks,
          "adaptive_threshold_meaning": "per scan: median + k x (standard deviation of the scores "
                                        "at or below their 90th percentile) "
                                        "of the scan's own anomaly map inside its brain; k "
                                        "(given here) flags the healthy FPR of the validation "
                                        "brains, each z-scored against itself; no test label",
          "threshold_source": "validation split: healthy brain voxels for "
                              + ", ".join(n for n in thresholds if n != LABELLED)
                              + (f"; its lesion labels for {LABELLED} (the threshold of best "
                                 "pooled validation Dice, as most papers report)"
                                 if LABELLED in thresholds else ""),
          "healthy_fpr": fprs[0],
          "healthy_fprs": list(fprs),
          "validation_best_dice": validation_dice,
          "train_slices": config.dataset.train_slices,
          "train_slices_meaning": input_pipeline.TRAIN_SLICES[config.dataset.train_slices],
          "lesion_margin_slices": config.dataset.lesion_margin_slices,
          "residual": config_lib.residual(config),
          "channels": list(config_lib.modalities(config.dataset)),
          "scored_channels": list(config_lib.scored_channels(config)),
          "standardize": config.dataset.standardize,
          "postprocess": post.to_dict(),
          "postprocess_active": postprocess.active_switches(post),
          "voxels": "inside the brain mask, whole volumes (3D)",
          "best_dice_upper_bound": "best threshold chosen on the test labels: an upper bound, "
                                   "not a result",
          "pooled_auroc_auprc": "histogram of 2^16 bins over [0, 4 x max healthy score]: "
                                "bounded memory, error < 1e-3",
          "per_volume_auroc_auprc": "exact",
          "accuracy": "pixel accuracy inside the brain; misleading when lesions are a few "
                      "percent of the brain (flagging nothing scores ~99 %)",
          "slice_auroc": "slices with any anomaly vs none, scored by "
                         + ("the model's slice score" if model.slice_score else
                            "the mean anomaly map inside the brain"),
      },
      "pooled": pooled,
      "per_volume": per_volume,
      "seconds": time.time() - start,
  }
  if outputs is not None:
    outputs.finish(result, groups["all"].curves.curves())
    # What produced the metrics; predict reads it for models without a checkpoint.
    workdir_lib.write_evaluated_config(workdir, config.to_dict())
    _log_summary(result)
  return result


def validation_thresholds(scorer, state, volumes, config):
  """({name: threshold}, {name: adaptive k}, histogram upper bound, validation Dice).

  `workdir.threshold_name(f)`: flags a fraction f of the healthy brain voxels; healthy means the
  brain minus any labelled lesion, and under `train_slices=lesion_free` only
  the slices that protocol would train on. `workdir.LABELLED`, when the
  validation volumes carry lesion labels: the threshold of best pooled Dice
  over their brains (lesions included), whose Dice (None without labels) is
  how settings such as `eval.residual` are chosen without the test split. The
  adaptive ks (brainseg_jax/adaptive.py) flag the same healthy fractions, each
  validation scan z-scored against its own whole brain.
  """
  post = config.eval.postprocess
  healthy, healthy_z, labelled_scores, labelled_truth = [], [], [], []
  for volume in volumes:
    brain, lesion = volume.brain_mask[..., 0], volume.anomaly_mask[..., 0]
    # Builders may leave lesions out of a validation brain (so that the healthy threshold never
    # counts them); they are brain to score for the labelled threshold.
    whole_brain = dataclasses.replace(volume, brain_mask=volume.brain_mask | volume.anomaly_mask)
    anomaly = scoring.anomaly_maps(scorer, state, whole_brain, post)[1]
    slices = (input_pipeline.lesion_free(lesion.any(axis=(1, 2)),
                                         config.dataset.lesion_margin_slices)
              if config.dataset.train_slices == "lesion_free" else slice(None))
    healthy.append(anomaly[slices][brain[slices] & ~lesion[slices]])
    healthy_z.append(adaptive.z_scores(healthy[-1], anomaly[brain | lesion]))
    labelled_scores.append(anomaly[brain | lesion])
    labelled_truth.append(lesion[brain | lesion])
  healthy = np.concatenate(healthy)
  if not healthy.size:
    raise UserError("the validation split has no healthy brain voxels to set a threshold on")
  thresholds = {workdir_lib.threshold_name(fpr): metrics.threshold_at_fpr(healthy, fpr)
                for fpr in config.eval.healthy_fprs}
  healthy_z = np.concatenate(healthy_z)
  adaptive_ks = {adaptive.name(fpr): metrics.threshold_at_fpr(healthy_z, fpr)
                 for fpr in config.eval.healthy_fprs}
  truth = np.concatenate(labelled_truth)
  validation_dice = None
  if truth.any():
    validation_dice, thresholds[LABELLED] = metrics.best_dice(np.concatenate(labelled_scores),
                                                              truth)
  return thresholds, adaptive_ks, 4.0 * max(float(healthy.max()), 1e-6), validation_dice


def test_volumes(builder, splits, standard):
  """The test volumes: every subject of `splits` of the test dataset, one split at a time.

  A split the build left empty is skipped (logged). Outside the test split
  builders may have cut the lesions out of the brain mask (so a training loss
  or healthy threshold never sees them); scored as test volumes, the lesions
  are brain again.
  """
  present = [split for split in splits if split in builder.info.splits]
  if not present:
    input_pipeline.split_source(builder, splits[0])  # the one-line error naming the splits
  for split in splits:
    if split not in present:
      logging.info("test dataset %s has no %r split (no subject in it): scoring %s", builder.name,
                   split, ", ".join(present))
      continue
    for volume in input_pipeline.load_volumes(builder, split, standard):
      if split != "test":
        volume = dataclasses.replace(volume, brain_mask=volume.brain_mask | volume.anomaly_mask)
      yield volume


def test_split_builder(config, train_builder):
  """The training dataset's builder, or the one named by eval.test_dataset."""
  if not config.eval.test_dataset:
    return train_builder
  dataset = ml_collections.ConfigDict(config.dataset.to_dict())
  dataset.name = config.eval.test_dataset
  if "manual_dir" in dataset:
    dataset.manual_dir = config.eval.test_manual_dir
  return input_pipeline.get_builder(dataset)


def _log_summary(result):
  logging.info("threshold %.4f (healthy validation FPR %.3f)", result["protocol"]["threshold"],
               result["protocol"]["healthy_fpr"])
  for name, m in result["pooled"].items():
    logging.info("%-8s Dice %.3f  sensitivity %.3f  precision %.3f  lesions found %.2f  "
                 "AUROC %.3f  AUPRC %.3f  [upper bound: best Dice %.3f]  (%d volumes)", name,
                 m["dice"], m["sensitivity"], m["precision"], m["lesion_sensitivity"], m["auroc"],
                 m["auprc"], m["best_dice_upper_bound"], m["num_volumes"])

