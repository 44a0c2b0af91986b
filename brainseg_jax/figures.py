"""PNG figures a person can look at to judge an anomaly map."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLUMNS = ("input", "reconstruction", "residual", "prediction", "truth")


def _display(slice_2d: np.ndarray) -> np.ndarray:
  """RAS (x, y) slice -> image with anterior up and the patient's left on the right."""
  return np.rot90(slice_2d)


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
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
