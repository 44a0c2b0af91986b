"""PNG figures a person can look at to judge an anomaly map.

Each figure is written whole or not at all (`data_prep.atomic`): a run killed
while saving never leaves a truncated PNG.
"""

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402

from data_prep.atomic import atomic_path  # noqa: E402

COLUMNS = ("input", "reconstruction", "residual", "prediction", "truth")
# The every-model figure: anomaly maps in HEAT_CMAP (black, purple, red, orange, pale yellow), the
# manual mask outlined in TRUTH_COLOUR and each prediction in PREDICTION_COLOUR, a colour the heat
# map never takes (a red outline vanished on its red and orange).
HEAT_CMAP = "inferno"
TRUTH_COLOUR, TRUTH_LABEL = "lime", "manual lesion mask (green)"
PREDICTION_COLOUR, PREDICTION_LABEL = "cyan", "prediction at the healthy threshold (cyan)"


def _display(slice_2d: np.ndarray) -> np.ndarray:
  """RAS (x, y) slice -> image with anterior up and the patient's left on the right."""
  return np.rot90(slice_2d)


def _save(fig, path: str, dpi: int, bottom: float = 0.0, top: float = 1.0):
  fig.tight_layout(rect=(0, bottom, 1, top))
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
  lines = [wrapped for line in caption.splitlines() for wrapped in textwrap.wrap(line, 130)]
  if lines:
    fig.text(0.5, 0.01, "\n".join(lines), ha="center", va="bottom", fontsize=8)
  _save(fig, path, dpi=100, bottom=0.04 + 0.035 * len(lines) if lines else 0.0, top=0.93)


def save_dice_boxplot(path: str, dice_by_model: dict[str, list[float]], title: str):
  """One box per model: the Dice of each test volume at the headline threshold."""
  names = list(dice_by_model)
  fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 4))
  ax.boxplot([dice_by_model[n] for n in names], showmeans=True)
  for i, name in enumerate(names, 1):  # every volume as a dot: a box hides how few there are
    values = dice_by_model[name]
    jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
    ax.scatter(i + np.asarray(jitter), values, s=8, alpha=0.5, color="tab:blue")
  ax.set_xticks(range(1, len(names) + 1), names)
  ax.set(ylabel="Dice per test volume", ylim=(0, 1), title=title)
  _save(fig, path, dpi=100)


def save_model_comparison(path: str, rows: list[dict], models: list[str]):
  """One row per volume at its largest lesion slice: the input, then each model's map.

  Each row dict has: title, image, truth, and per model name a dict with
  anomaly_map, prediction and threshold (2D arrays and a float). The truth is
  outlined in `TRUTH_COLOUR` on every panel, each model's prediction in
  `PREDICTION_COLOUR`, a colour the heat map's colormap never takes, both with a
  dark edge so they stay visible on its brightest values; the legend says which is which.
  """
  from matplotlib.lines import Line2D

  fig, axes = plt.subplots(len(rows), len(models) + 1,
                           figsize=(2.1 * (len(models) + 1), 2.2 * len(rows) + 0.3), squeeze=False)
  for r, row in enumerate(rows):
    panels = [("input", row["image"], dict(cmap="gray", vmin=0, vmax=1.2), None)]
    panels += [(m, row[m]["anomaly_map"],
                dict(cmap=HEAT_CMAP, vmin=0, vmax=2 * max(row[m]["threshold"], 1e-6)),
                row[m]["prediction"]) for m in models]
    for c, (name, panel, style, prediction) in enumerate(panels):
      ax = axes[r, c]
      ax.imshow(_display(np.asarray(panel, np.float32)), interpolation="nearest", **style)
      if row["truth"].any():
        _outline(ax, row["truth"], TRUTH_COLOUR, 0.9)
      if prediction is not None and prediction.any():
        _outline(ax, prediction, PREDICTION_COLOUR, 1.1)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(name, fontsize=9)
    axes[r, 0].set_ylabel(row["title"], fontsize=7)
  handles = [Line2D([], [], color=colour, linewidth=2, path_effects=_dark_edge(2))
             for colour in (TRUTH_COLOUR, PREDICTION_COLOUR)]
  fig.legend(handles, [TRUTH_LABEL, PREDICTION_LABEL],
             loc="upper center", ncol=2, fontsize=9, frameon=False)
  _save(fig, path, dpi=100, top=1 - 0.35 / fig.get_figheight())


def _dark_edge(linewidth: float) -> list:
  """A thin dark rim under a line: it keeps a light outline visible on light pixels."""
  return [patheffects.withStroke(linewidth=linewidth + 1.6, foreground="black", alpha=0.8)]


def _outline(ax, mask, colour: str, linewidth: float):
  ax.contour(_display(np.asarray(mask, np.float32)), levels=[0.5], colors=colour,
             linewidths=linewidth).set(path_effects=_dark_edge(linewidth))
