"""Everything evaluation writes into the workdir, as a person would want to read it.

  the metrics       protocol, pooled and per-volume metrics (workdir.write_metrics)
  per_volume.csv    one row per test volume
  summary.md        the pooled table, with the protocol in words
  roc_pr.png        pooled ROC and precision-recall curves
  anomaly_maps.png  overview: one row per volume at its largest anomaly
  figures/<id>.png  per volume: its most anomalous slices
  nifti/<id>_{anomaly_map,prediction,reconstruction}.nii.gz, on the volume's original grid

Files are written to a temporary name and renamed, so a killed evaluation
never leaves a half-written one behind.
"""

import csv
import io
import math
import os

import ml_collections
import nibabel as nib
import numpy as np

from brainseg_jax import figures
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.datasets import input_pipeline
from brainseg_jax.workdir import LABELLED
from data_prep import atomic

_CSV_KEYS = ("dice", "sensitivity", "precision", "accuracy", "lesions", "lesions_detected",
             "false_positive_components", "auroc", "auprc", "best_dice_upper_bound")


class EvalOutputs:
  def __init__(self, workdir: str, builder, eval_config: ml_collections.ConfigDict):
    self.workdir, self.builder, self.config = workdir, builder, eval_config
    self._overview_rows: list[dict] = []
    self._overview_types: dict[str, int] = {}
    os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
    if eval_config.write_nifti:
      os.makedirs(os.path.join(workdir, "nifti"), exist_ok=True)

  def add_volume(self, volume, recon, anomaly, prediction, threshold):
    """Figures and NIfTI maps of one volume; keeps only a 2D overview row of it."""
    truth = volume.anomaly_mask[..., 0]
    image = volume.image[..., 0]
    slices = _most_anomalous_slices(truth if truth.any() else prediction, count=4)
    rows = [_row(f"{volume.subject_id}\nslice {k}", image, recon, anomaly, truth, k)
            for k in slices]
    figures.save_volume_grid(os.path.join(self.workdir, "figures", f"{volume.subject_id}.png"),
                             rows, threshold)
    # Overview: spread the rows over anomaly types, at most num_figure_volumes.
    seen = self._overview_types.get(volume.anomaly_type, 0)
    if len(self._overview_rows) < self.config.num_figure_volumes and seen <= min(
        self._overview_types.values(), default=0):
      self._overview_rows.append(rows[0])
      self._overview_types[volume.anomaly_type] = seen + 1
    self._threshold = threshold
    if self.config.write_nifti:
      for name, array in (("anomaly_map", anomaly), ("prediction", prediction.astype(np.uint8)),
                          ("reconstruction", recon)):
        path = os.path.join(self.workdir, "nifti", f"{volume.subject_id}_{name}.nii.gz")
        save_nifti(input_pipeline.to_original_grid(self.builder, volume.subject_id, array), path)

  def finish(self, result: dict, curves: dict):
    workdir_lib.write_metrics(self.workdir, result)
    atomic.write_text(os.path.join(self.workdir, "per_volume.csv"), _per_volume_csv(result))
    atomic.write_text(os.path.join(self.workdir, "summary.md"), summary_markdown(result))
    figures.save_curves(os.path.join(self.workdir, "roc_pr.png"), curves,
                        result["pooled"]["all"]["auroc"], result["pooled"]["all"]["auprc"])
    if self._overview_rows:
      figures.save_volume_grid(os.path.join(self.workdir, "anomaly_maps.png"),
                               self._overview_rows, self._threshold)


def _most_anomalous_slices(mask: np.ndarray, count: int) -> list[int]:
  area = mask.sum(axis=(1, 2))
  order = np.argsort(-area, kind="stable")[:count]
  return sorted(int(k) for k in order)


def _row(title, image, recon, anomaly, truth, k):
  return {"title": title, "image": image[k], "reconstruction": recon[k],
          "anomaly_map": anomaly[k], "truth": truth[k]}


def _per_volume_csv(result: dict) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(("subject_id", "anomaly_type", *_CSV_KEYS))
  for subject_id, m in result["per_volume"].items():
    writer.writerow((subject_id, m["anomaly_type"], *(_fmt(m[k]) for k in _CSV_KEYS)))
  return buffer.getvalue()


def summary_markdown(result: dict) -> str:
  protocol = result["protocol"]
  fprs = protocol["healthy_fprs"]
  lines = [f"# {result['model']} on {result['dataset']} (test: {result['test_dataset']})", "",
           f"Checkpoint step {result['checkpoint_step']}. Thresholds from the healthy validation "
           f"brains at false-positive rates {', '.join(f'{f:g}' for f in fprs)} (headline "
           f"{fprs[0]:g}: threshold {protocol['threshold']:.4g}){_labelled_note(protocol)}. "
           f"Trained on {protocol['train_slices']} slices. Residual: "
           f"{protocol['residual']}. Post-processing: "
           f"{', '.join(protocol['postprocess_active']) or 'none'}.", "",
           "| lesions | threshold | Dice | sensitivity | precision | lesions found | "
           "false-positive components | accuracy |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for group, m in result["pooled"].items():
    for name in protocol["thresholds"]:
      a = m[name]
      lines.append(f"| {group} ({m['num_volumes']}) | {workdir_lib.threshold_label(name)} | "
                   f"{_fmt(a['dice'])} | "
                   f"{_fmt(a['sensitivity'])} | {_fmt(a['precision'])} | "
                   f"{_fmt(a['lesion_sensitivity'])} | {a['false_positive_components']} | "
                   f"{_fmt(a['accuracy'])} |")
  lines += ["", "| lesions | AUROC | AUPRC | best Dice (upper bound) | mean volume Dice |",
            "| --- | ---: | ---: | ---: | ---: |"]
  for group, m in result["pooled"].items():
    lines.append(f"| {group} | {_fmt(m['auroc'])} | {_fmt(m['auprc'])} | "
                 f"{_fmt(m['best_dice_upper_bound'])} | {_fmt(m['mean_volume_dice'])} |")
  lines += ["", f"Slice-level AUROC: {_fmt(result['pooled']['all']['slice_auroc'])} "
            f"({protocol['slice_auroc']}).", "",
            f"Accuracy: {protocol['accuracy']}. Best Dice: {protocol['best_dice_upper_bound']}.",
            ""]
  return "\n".join(lines)


def _labelled_note(protocol: dict) -> str:
  if LABELLED not in protocol["thresholds"]:
    return ""
  return (f", and the threshold of best Dice on the labelled validation volumes "
          f"({protocol['thresholds'][LABELLED]:.4g})")


def _fmt(value) -> str:
  if isinstance(value, float):
    return "n/a" if math.isnan(value) else f"{value:.3f}"
  return str(value)


def with_input_orientation(image: nib.Nifti1Image, scan: nib.Nifti1Image) -> nib.Nifti1Image:
  """`image` (on `scan`'s grid) with the scan's sform and qform and their codes.

  A map that opens on top of its scan in every viewer must say what the scan
  said, also where its two orientations disagree (viewers pick differently).
  """
  out = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
  out.set_sform(scan.header.get_sform(), int(scan.header["sform_code"]))
  out.set_qform(scan.header.get_qform(), int(scan.header["qform_code"]))
  return out


def save_nifti(image: nib.Nifti1Image, path: str):
  """Writes to a temporary name, then renames: never a half-written file."""
  with atomic.atomic_path(path) as tmp:
    nib.save(image, tmp)
