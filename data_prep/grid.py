"""The fixed output grid in template space, shared with `synthetic_brain`.

Axes are RAS world axes; R x R voxels in-plane over `synthetic.FOV_MM` and
S = round(0.75 R) axial slices over `synthetic.Z_FOV_MM`, centred on the MNI
brain's bounding box, exactly as `data_prep.synthetic.load_template` builds its
working grid. Crop/pad to the FOV, slice placement and resize to the
resolution are all properties of this grid: the scan is interpolated onto it
once, instead of three times.
"""

import dataclasses
import functools

import numpy as np

from data_prep import resample, synthetic, template


@dataclasses.dataclass(frozen=True)
class Grid:
  shape: tuple[int, int, int]
  affine: np.ndarray  # RAS voxel-to-world, in template (MNI) world


@functools.lru_cache(maxsize=8)
def output_grid(resolution: int) -> Grid:
  shape, spacing = synthetic.grid_geometry(resolution)
  centre = template.brain_centre_world()
  affine = np.diag([*spacing, 1.0])
  affine[:3, 3] = centre - np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0
  affine.setflags(write=False)
  return Grid(shape=tuple(int(s) for s in shape), affine=affine)


@functools.lru_cache(maxsize=8)
def template_brain_mask(resolution: int) -> np.ndarray:
  """The template brain mask on the output grid (anti-aliased, then > 0.5)."""
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
