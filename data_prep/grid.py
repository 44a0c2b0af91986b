"""The fixed working grid in template space, shared by real and synthetic datasets.

Axes are RAS world axes; R x R voxels in-plane over `FOV_MM` and S = round(0.75 R) axial slices
over `Z_FOV_MM`, centred on the MNI brain's bounding box. Synthetic subjects are made on this grid
(`data_prep.synthetic`) and real scans are interpolated onto it, so the same voxel shows the same
anatomy in both. Crop/pad to the FOV, slice placement and resize to the resolution are all
properties of this grid: a scan is interpolated onto it once, instead of three times.
"""

import dataclasses
import functools

import numpy as np

from data_prep import template

# In-plane field of view: large enough for the MNI brain (145 x 181 mm) plus the random affine of
# synthetic subjects, and a "round" clinical value so spacing = 192 / R.
FOV_MM = 192.0
# Axial coverage: the template brain spans 155 mm from the foramen magnum cut to the vertex;
# 160 mm keeps a small margin without wasting slices.
Z_FOV_MM = 160.0
# Number of slices S = round(0.75 * R), hence slice thickness = 160 / S mm, i.e. about 1.11 x the
# in-plane spacing (R=32: 24 x 6.67 mm, R=64: 48 x 3.33 mm, R=128: 96 x 1.67 mm). Slightly
# thicker slices than in-plane spacing mimic typical clinical axial acquisitions and save memory.
SLICE_RATIO = 0.75


def grid_geometry(resolution: int) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
  """Return ``(shape, spacing_mm)`` of the grid for ``resolution``.

  Needs no template, so callers (e.g. model configs) can know the volume shape cheaply.
  """
  r = int(resolution)
  if r < 8:
    raise ValueError(f"resolution must be >= 8, got {resolution}")
  s = max(1, round(SLICE_RATIO * r))
  return (r, r, s), (FOV_MM / r, FOV_MM / r, Z_FOV_MM / s)


@dataclasses.dataclass(frozen=True)
class Grid:
  shape: tuple[int, int, int]
  affine: np.ndarray  # RAS voxel-to-world, in template (MNI) world
  spacing_mm: tuple[float, float, float]


@functools.lru_cache(maxsize=8)
def output_grid(resolution: int) -> Grid:
  shape, spacing = grid_geometry(resolution)
  centre = template.brain_centre_world()
  affine = np.diag([*spacing, 1.0])
  affine[:3, 3] = centre - np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0
  affine.setflags(write=False)
  return Grid(shape=tuple(int(s) for s in shape), affine=affine,
              spacing_mm=tuple(float(s) for s in spacing))


@functools.lru_cache(maxsize=8)
def template_brain_mask(resolution: int) -> np.ndarray:
  """The template brain mask on the output grid (anti-aliased, then > 0.5)."""
  # Imported here: resample loads SimpleITK (~110 MB resident), which the grid's
  # other users (every training process, via the synthetic builder) never need.
  from data_prep import resample
  _, mask, affine = template.load()
  g = output_grid(resolution)
  out = resample.resample_grid(mask.astype(np.float32), affine, g.shape, g.affine) > 0.5
  out.setflags(write=False)
  return out


def select_slices(resolution: int, mode: str, min_brain_fraction: float) -> np.ndarray:
  """Indices of the axial slices kept: all, or those the template brain covers.

  Decided on the template mask, so every subject keeps the same slices.
  """
  s = output_grid(resolution).shape[2]
  if mode == "all":
    return np.arange(s)
  if mode == "brain":
    mask = template_brain_mask(resolution)
    fraction = mask.mean(axis=(0, 1))
    return np.nonzero(fraction >= min_brain_fraction)[0]
  raise ValueError(f"slices must be 'all' or 'brain', got {mode!r}")
