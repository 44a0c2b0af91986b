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

from data_prep import cache, grid, qc  # noqa: E402
from data_prep.atomic import atomic_path  # noqa: E402
from data_prep.pipeline import Preprocessed  # noqa: E402

# Above this many subjects the sheet shows one axial slice each, on a square grid.
_MAX_THREE_VIEW = 12


def _title(ax, name: str, result: Preprocessed, modality: str):
  """The subject's name; red, with the reason, when its registration failed QC."""
  reasons = qc.problems(result.qc, modality)
  ax.set_title(name + ("\nQC: " + reasons[0][:40] if reasons else ""), fontsize=6,
               color="red" if reasons else "black")


def write(path: str, volumes: dict[str, Preprocessed], resolution: int, modality: str) -> str:
  """`modality`: of the registered scans, for the QC rule (`RegistrationQC.flag_reasons`)."""
  if len(volumes) > _MAX_THREE_VIEW:
    return _write_axial_grid(path, volumes, resolution, modality)
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
    _title(axes[0, col], name, result, modality)
  return _save(fig, path)


def _write_axial_grid(path: str, volumes: dict[str, Preprocessed], resolution: int,
                      modality: str) -> str:
  names = sorted(volumes)
  outline = grid.template_brain_mask(resolution)
  cz = outline.shape[2] // 2
  cols = int(np.ceil(np.sqrt(len(names))))
  rows = int(np.ceil(len(names) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for ax, name in zip(axes.ravel(), names, strict=False):
    result = volumes[name]
    keep = list(result.record.slice_indices)
    image = result.image[:, :, keep.index(cz)] if cz in keep else np.zeros(outline.shape[:2])
    lesion = result.anomaly_mask[:, :, keep.index(cz)] if cz in keep else np.zeros_like(image)
    ax.imshow(image.T, origin="lower", cmap="gray", vmin=0, vmax=1.2)
    ax.contour(outline[:, :, cz].T.astype(float), [0.5], colors="lime", linewidths=0.5)
    if lesion.any():
      ax.contour(lesion.T.astype(float), [0.5], colors="red", linewidths=0.5)
    _title(ax, name, result, modality)
  return _save(fig, path)


def _save(fig, path: str) -> str:
  fig.suptitle("same slices of every subject; green: template brain, red: lesion mask; "
               "red title: registration QC failed", fontsize=9)
  fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the title above the first row
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=90, format="png")
  plt.close(fig)
  return path


def from_cache(work_dir: str, path: str, resolution: int, modality: str,
               subjects: int = 8) -> str:
  """A sheet of `subjects` volumes spread over a preprocessing cache folder ("" if empty).

  `subjects` 0 shows every volume.
  """
  files = sorted(f for f in os.listdir(work_dir) if f.endswith(".npz") and ".tmp" not in f)
  if not files:
    return ""
  if subjects > 0:
    files = files[::max(1, len(files) // subjects)][:subjects]
  volumes = {f[:-4]: cache.load(os.path.join(work_dir, f)) for f in files}
  return write(path, volumes, resolution, modality)
