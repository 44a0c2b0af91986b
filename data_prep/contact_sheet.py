"""A PNG contact sheet: the same axial, coronal and sagittal slice of several subjects.

Every preprocessed volume lives on one template-space grid, so the same slice
index must show the same anatomy in every subject. The template brain outline
is drawn on every tile: a misregistered subject stands out at a glance.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data_prep import cache, grid  # noqa: E402
from data_prep.pipeline import Preprocessed  # noqa: E402


def write(path: str, volumes: dict[str, Preprocessed], resolution: int) -> str:
  names = sorted(volumes)
  outline = grid.template_brain_mask(resolution)
  fig, axes = plt.subplots(3, len(names), figsize=(2.2 * len(names), 6.6), squeeze=False)
  for col, name in enumerate(names):
    result = volumes[name]
    keep = result.record.slice_indices
    image = np.zeros(outline.shape, np.float32)
    image[:, :, keep] = result.image
    lesion = np.zeros(outline.shape, bool)
    lesion[:, :, keep] = result.anomaly_mask.astype(bool)
    cx, cy, cz = (s // 2 for s in outline.shape)
    views = [(image[:, :, cz], outline[:, :, cz], lesion[:, :, cz]),
             (image[:, cy, :], outline[:, cy, :], lesion[:, cy, :]),
             (image[cx, :, :], outline[cx, :, :], lesion[cx, :, :])]
    for row, (img, brain, les) in enumerate(views):
      ax = axes[row, col]
      ax.imshow(img.T, origin="lower", cmap="gray", vmin=0, vmax=1.2)
      ax.contour(brain.T.astype(float), [0.5], colors="lime", linewidths=0.6)
      if les.any():
        ax.contour(les.T.astype(float), [0.5], colors="red", linewidths=0.6)
      ax.set_xticks([])
      ax.set_yticks([])
    axes[0, col].set_title(name, fontsize=7)
  fig.suptitle("same slices of every subject; green: template brain, red: lesion mask",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def from_cache(work_dir: str, path: str, resolution: int, subjects: int = 8) -> str:
  """A sheet of `subjects` volumes spread over a preprocessing cache folder ("" if empty)."""
  files = sorted(f for f in os.listdir(work_dir) if f.endswith(".npz") and ".tmp" not in f)
  if not files:
    return ""
  step = max(1, len(files) // subjects)
  volumes = {f[:-4]: cache.load(os.path.join(work_dir, f)) for f in files[::step][:subjects]}
  return write(path, volumes, resolution)
