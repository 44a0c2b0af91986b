"""PNG figures a person can look at to judge an anomaly map.

Each figure is written whole or not at all (`data_prep.atomic`): a run killed
while saving never leaves a truncated PNG.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data_prep.atomic import atomic_path  # noqa: E402

COLUMNS = ("input", "reconstruction", "residual", "prediction", "truth")


def _display(slice_2d: np.ndarray) -> np.ndarray:
  """RAS (x, y) slice -> image with anterior up and the patient's left on the right."""
  return np.rot90(slice_2d)


def _save(fig, path: str, dpi: int, bottom: float = 0.0):
  fig.tight_layout(rect=(0, bottom, 1, 1))
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=dpi)
  plt.close(fig)


def save_volume_grid(path: str, rows: list[dict], threshold: float):
  """One row per volume at its most anomalous slice: input, recon, residual, prediction, truth.

  Each row dict has: title, image, reconstruction, anomaly_map, truth (2D arrays).
  The residual is shown on a fixed scale up to 2x the threshold so rows compare.
  """
  fig, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(2.2 * len(COLUMNS), 2.3 * len(rows)),
                           squeeze=False)
  for r, row in enumerate(rows):
    panels = (
        (row["image"], dict(cmap="gray", vmin=0, vmax=1.2)),
        (row["reconstruction"], dict(cmap="gray", vmin=0, vmax=1.2)),
        (row["anomaly_map"], dict(cmap="inferno", vmin=0, vmax=2 * threshold)),
        (row["anomaly_map"] > threshold, dict(cmap="gray", vmin=0, vmax=1)),
        (row["truth"], dict(cmap="gray", vmin=0, vmax=1)),
    )
    for c, (panel, style) in enumerate(panels):
      ax = axes[r, c]
      ax.imshow(_display(np.asarray(panel, np.float32)), interpolation="nearest", **style)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(COLUMNS[c], fontsize=10)
    axes[r, 0].set_ylabel(row["title"], fontsize=8)
  _save(fig, path, dpi=110)


def save_curves(path: str, curves: dict, auroc: float, auprc: float):
  """Pooled ROC and precision-recall curves side by side."""
  fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 4))
  roc.plot(curves["fpr"], curves["tpr"])
  roc.plot([0, 1], [0, 1], color="gray", linestyle=":")
  roc.set(xlabel="false-positive rate", ylabel="true-positive rate",
          title=f"ROC (AUROC {auroc:.3f})", xlim=(0, 1), ylim=(0, 1.01))
  pr.plot(curves["tpr"], curves["precision"])
  pr.set(xlabel="recall", ylabel="precision", title=f"precision-recall (AUPRC {auprc:.3f})",
         xlim=(0, 1), ylim=(0, 1.01))
  _save(fig, path, dpi=100)


def save_overlay(path: str, scan, anomaly_map, prediction, threshold: float, caption: str = ""):
  """The scan's axial slice with the most flagged voxels: scan, anomaly map, prediction outline.

  All three images share the scan's grid; they are reoriented to RAS only for display.
  """
  import nibabel as nib

  scan, anomaly_map, prediction = (nib.as_closest_canonical(i) for i in
                                   (scan, anomaly_map, prediction))
  image = np.asarray(scan.dataobj, np.float32)
  if image.ndim == 4:
    image = image[..., 0]
  anomaly = np.asarray(anomaly_map.dataobj, np.float32)
  flagged = np.asarray(prediction.dataobj) > 0
  k = int(np.argmax(flagged.sum(axis=(0, 1)))) if flagged.any() else int(
      np.argmax(anomaly.sum(axis=(0, 1))))
  vmax = np.percentile(image[image > 0], 99.5) if (image > 0).any() else 1.0
  fig, axes = plt.subplots(1, 3, figsize=(11, 4))
  axes[0].imshow(_display(image[:, :, k]), cmap="gray", vmin=0, vmax=vmax)
  axes[0].set_title(f"scan, axial slice {k}")
  axes[1].imshow(_display(image[:, :, k]), cmap="gray", vmin=0, vmax=vmax)
  heat = np.ma.masked_less_equal(anomaly[:, :, k], 0.5 * threshold)
  axes[1].imshow(_display(heat), cmap="inferno", alpha=0.7, vmin=0, vmax=2 * threshold)
  axes[1].set_title("anomaly map")
  axes[2].imshow(_display(image[:, :, k]), cmap="gray", vmin=0, vmax=vmax)
  if flagged[:, :, k].any():
    axes[2].contour(_display(flagged[:, :, k].astype(float)), levels=[0.5], colors="red")
  axes[2].set_title(f"prediction (> {threshold:.3g})")
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  if caption:
    fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=8)
  _save(fig, path, dpi=100, bottom=0.12 if caption else 0.0)
