"""Evaluation: anomaly maps for every test volume, scored against the truth.

    python -m brainseg_jax.eval --config=configs/vae.py --workdir=runs/vae

The protocol keeps the test labels out of every choice: the threshold is the
score that flags `eval.healthy_fpr` of the voxels of the healthy validation
brains. The best Dice over all thresholds is reported too, labelled as the
upper bound it is, since it is chosen by looking at the test labels.
"""

import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from brainseg_jax import checkpoints, cli, figures, metrics, scoring, train
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.datasets import input_pipeline
from brainseg_jax.errors import UserError
from brainseg_jax.models import create_model

POOLED_KEYS = ("dice", "sensitivity", "precision", "accuracy", "auroc", "auprc",
               "best_dice_upper_bound")


def restore_state(config: ml_collections.ConfigDict, workdir: str, model):
  """The latest train state in `workdir`, checked against `config`; (state, step)."""
  template = train.create_train_state(model, config)
  if not model.trainable:
    return template, 0
  if not os.path.isdir(checkpoints.checkpoint_dir(workdir)):
    raise UserError(f"no checkpoints in {os.path.abspath(workdir)}: train first "
                    f"(python launch.py --config=... --workdir={workdir})")
  checkpointer = checkpoints.Checkpointer(workdir, create=False)
  saved = checkpointer.saved_config()
  if saved is not None and saved.get("model") != _jsonable(config.model.to_dict()):
    raise UserError(f"the model in {workdir} was trained with model config {saved.get('model')}, "
                    f"not {config.model.to_dict()}: pass the config it was trained with")
  state = checkpointer.restore(template)
  checkpointer.close()
  return state, int(state.step)


def _jsonable(d):
  return json.loads(json.dumps(d))


def score_volumes(scorer, state, volumes):
  """Reconstruction and anomaly map (numpy, (S, H, W)) of every volume."""
  results = []
  for volume in volumes:
    recon, anomaly = scorer(state, volume.image, volume.brain_mask)
    results.append((recon[..., 0], anomaly[..., 0]))
  return results


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Scores validation and test volumes; writes metrics.json and figures; returns the metrics."""
  workdir = workdir_lib.ensure_writable(workdir)
  model = create_model(config)
  state, step = restore_state(config, workdir, model)
  builder = input_pipeline.get_builder(config.dataset)
  scorer = scoring.VolumeScorer(model, config.eval.residual)
  state = scorer.place(state)

  start = time.time()
  validation = input_pipeline.load_volumes(builder, "validation")
  validation_scores = score_volumes(scorer, state, validation)
  healthy_scores = np.concatenate([anomaly[v.brain_mask[..., 0]] for v, (_, anomaly)
                                   in zip(validation, validation_scores, strict=True)])
  threshold = metrics.threshold_at_fpr(healthy_scores, config.eval.healthy_fpr)

  test = input_pipeline.load_volumes(_test_builder(config, builder), "test")
  test_scores = score_volumes(scorer, state, test)
  per_volume, brain_scores, brain_truth, types = {}, [], [], []
  for volume, (_, anomaly) in zip(test, test_scores, strict=True):
    brain = volume.brain_mask[..., 0]
    scores, truth = anomaly[brain], volume.anomaly_mask[..., 0][brain]
    per_volume[volume.subject_id] = {"anomaly_type": volume.anomaly_type,
                                     **metrics.all_metrics(scores, truth, threshold)}
    brain_scores.append(scores)
    brain_truth.append(truth)
    types.append(volume.anomaly_type)

  pooled = {"all": _pooled(brain_scores, brain_truth, threshold, per_volume)}
  for anomaly_type in sorted(set(types)):
    keep = [t == anomaly_type for t in types]
    pooled[anomaly_type] = _pooled(
        [s for s, k in zip(brain_scores, keep, strict=True) if k],
        [t for t, k in zip(brain_truth, keep, strict=True) if k],
        threshold, {s: m for s, m in per_volume.items() if m["anomaly_type"] == anomaly_type})

  result = {
      "dataset": f"{config.dataset.name}/{config.dataset.modality}_{config.dataset.resolution}",
      "test_dataset": config.eval.test_dataset or config.dataset.name,
      "model": config.model.name,
      "checkpoint_step": step,
      "protocol": {
          "threshold": threshold,
          "threshold_source": "validation split (healthy only)",
          "healthy_fpr": config.eval.healthy_fpr,
          "residual": config.eval.residual,
          "voxels": "inside the brain mask",
          "best_dice_upper_bound": "best threshold chosen on the test labels: an upper bound, "
                                   "not a result",
      },
      "pooled": pooled,
      "per_volume": per_volume,
      "seconds": time.time() - start,
  }
  if jax.process_index() == 0:
    workdir_lib.write_json_atomically(os.path.join(workdir, "metrics.json"), result)
    _save_figure(os.path.join(workdir, "anomaly_maps.png"), test, test_scores, threshold,
                 config.eval.num_figure_volumes)
    _log_summary(result)
  return result


def _test_builder(config, train_builder):
  """The training dataset's builder, or the one named by eval.test_dataset."""
  if not config.eval.test_dataset:
    return train_builder
  dataset = ml_collections.ConfigDict(config.dataset.to_dict())
  dataset.name = config.eval.test_dataset
  if "manual_dir" in dataset:
    dataset.manual_dir = config.eval.test_manual_dir
  return input_pipeline.get_builder(dataset)


def _pooled(scores, truth, threshold, per_volume):
  """Metrics over all voxels of the volumes together, plus the mean over volumes."""
  pooled = metrics.all_metrics(np.concatenate(scores), np.concatenate(truth), threshold)
  pooled = {k: pooled[k] for k in POOLED_KEYS}
  for key in ("dice", "auroc", "auprc"):
    values = [m[key] for m in per_volume.values()]
    pooled[f"mean_volume_{key}"] = float(np.nanmean(values)) if values else float("nan")
  pooled["num_volumes"] = len(per_volume)
  return pooled


def _save_figure(path, volumes, scores, threshold, num_volumes):
  """One row per volume (spread over anomaly types) at its largest anomaly slice."""
  by_type = {}
  for i, v in enumerate(volumes):
    by_type.setdefault(v.anomaly_type, []).append(i)
  order = [i for group in zip(*by_type.values(), strict=False) for i in group] if by_type else []
  rows = []
  for i in order[:num_volumes]:
    volume, (recon, anomaly) = volumes[i], scores[i]
    k = int(np.argmax(volume.anomaly_mask[..., 0].sum(axis=(1, 2))))
    rows.append({"title": f"{volume.subject_id}\nslice {k}", "image": volume.image[k, ..., 0],
                 "reconstruction": recon[k], "anomaly_map": anomaly[k],
                 "truth": volume.anomaly_mask[k, ..., 0]})
  if rows:
    figures.save_volume_grid(path, rows, threshold)


def _log_summary(result):
  logging.info("threshold %.4f (healthy validation FPR %.3f)", result["protocol"]["threshold"],
               result["protocol"]["healthy_fpr"])
  for name, m in result["pooled"].items():
    logging.info("%-8s Dice %.3f  sensitivity %.3f  precision %.3f  AUROC %.3f  AUPRC %.3f  "
                 "[upper bound: best Dice %.3f]  (%d volumes)", name, m["dice"], m["sensitivity"],
                 m["precision"], m["auroc"], m["auprc"], m["best_dice_upper_bound"],
                 m["num_volumes"])


if __name__ == "__main__":
  cli.run(evaluate)
