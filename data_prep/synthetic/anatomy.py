"""Healthy anatomy: the template's tissue maps on the working grid, varied per subject.

Every subject starts from the same MNI152 tissue maps, resampled once per resolution onto
`data_prep.grid` (the expensive step, cached). A subject's anatomy is that template seen through a
random affine plus a smooth elastic field, so shapes vary like between people while the tissue
maps stay plausible; the warp is kept so that a glioma's mass effect can be composed with it.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy import ndimage as ndi

from data_prep import grid, template

TISSUES = ("gm", "wm", "csf")


@dataclasses.dataclass(frozen=True)
class Template:
  """Tissue probability maps on the working grid (float32, shape (R, R, S)).

  ``gm + wm + csf`` equals the (anti-aliased) brain fraction of each voxel,
  so partial volume at the brain edge is preserved; ``brain_mask`` is that
  fraction thresholded at 0.5.  Arrays are read-only because the instance is
  cached and shared by every caller.
  """

  gm: np.ndarray
  wm: np.ndarray
  csf: np.ndarray
  brain_mask: np.ndarray
  spacing_mm: tuple[float, float, float]


@functools.lru_cache(maxsize=8)
def load_template(resolution: int) -> Template:
  """Resample the 1 mm MNI152 2009a template once onto the working grid.

  Grid: `data_prep.grid.grid_geometry`, axes aligned with RAS world axes and
  centred on the brain's bounding box.  Each map is Gaussian-filtered before
  linear interpolation (sigma = (downsampling factor - 1) / 2 voxels, the usual
  anti-aliasing rule) so thin structures keep their partial-volume fraction
  instead of aliasing.  Cached per resolution because every subject starts
  from it and it is the only step touching the 8.7 M-voxel source volumes.
  """
  shape, spacing = grid.grid_geometry(resolution)
  _, mask, affine = template.load()
  src_voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
  sigma = np.maximum((np.asarray(spacing) / src_voxel - 1.0) / 2.0, 0.0)
  lo, crop = _brain_crop(mask.shape, sigma)
  coords = _working_grid_coords(affine, lo, shape, spacing)
  out = {
    name: _antialiased_sample(vol, sigma, coords) for name, vol in _cropped_maps(mask, crop).items()
  }
  gm, wm = out["gm"], out["wm"]
  csf = np.clip(out["mask"] - gm - wm, 0.0, 1.0).astype(np.float32)
  brain_mask = (gm + wm + csf) > 0.5
  for arr in (gm, wm, csf, brain_mask):
    arr.setflags(write=False)
  return Template(
    gm=gm, wm=wm, csf=csf, brain_mask=brain_mask, spacing_mm=tuple(float(s) for s in spacing)
  )


def _brain_crop(full_shape, sigma: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]]:
  """(lowest corner, slices) of the template brain plus a margin for the filter.

  Filtering only this box instead of the whole head makes anti-aliasing cheap.
  """
  lo_b, hi_b = template.brain_bounds()
  margin = np.ceil(4 * sigma).astype(int) + 2
  lo = np.maximum(lo_b - margin, 0)
  hi = np.minimum(hi_b + margin + 1, full_shape)
  return lo, tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))


def _cropped_maps(mask: np.ndarray, crop) -> dict[str, np.ndarray]:
  """Brain mask and GM/WM probabilities inside ``crop``, float32 in [0, 1]."""
  maskf = mask[crop].astype(np.float32)
  maps = {"mask": maskf}
  for name in ("gm", "wm"):
    # Restricting the probability maps (stored as 0..255) to the mask guarantees
    # gm + wm <= brain fraction after (positive, linear) filtering.
    probability = np.asarray(template.image(name).dataobj)[crop]
    maps[name] = probability.astype(np.float32) * (maskf / 255.0)
  return maps


def _working_grid_coords(affine: np.ndarray, lo: np.ndarray, shape, spacing) -> np.ndarray:
  """Cropped-template voxel coordinates of every working-grid voxel, (3, R, R, S)."""
  centre_world = template.brain_centre_world()
  axes = [(np.arange(n) - (n - 1) / 2.0) * sp for n, sp in zip(shape, spacing, strict=True)]
  inv = np.linalg.inv(affine)
  coords = np.empty((3, *shape), dtype=np.float32)
  for i in range(3):
    c = inv[i, 3] + inv[i, :3] @ centre_world - lo[i]
    coords[i] = (
      c
      + inv[i, 0] * axes[0][:, None, None]
      + inv[i, 1] * axes[1][None, :, None]
      + inv[i, 2] * axes[2][None, None, :]
    )
  return coords


def _antialiased_sample(volume: np.ndarray, sigma: np.ndarray, coords: np.ndarray) -> np.ndarray:
  smooth = ndi.gaussian_filter(volume, sigma, mode="constant")
  return np.clip(
    ndi.map_coordinates(smooth, coords, order=1, mode="constant", cval=0.0), 0.0, 1.0
  ).astype(np.float32)


# --- per-subject variation -----------------------------------------------------------------------
_N_CONTROL = 5  # elastic control points per axis
_ELASTIC_STD_MM = 3.0
_MAX_ROT_DEG = 8.0
_SCALE_RANGE = (0.92, 1.08)
_MAX_SHIFT_MM = 5.0


@dataclasses.dataclass(frozen=True)
class Warp:
  """Backward map subject grid -> template grid: M p + t + u(p) (all in mm).

  Points are in mm relative to the grid centre (the template brain centre),
  so the affine rotates/scales about the brain rather than a corner.
  """

  matrix: np.ndarray  # (3, 3)
  shift: np.ndarray  # (3,)
  disp: np.ndarray  # (3, R, R, S) elastic displacement in mm
  shape: tuple[int, int, int]
  spacing: np.ndarray  # (3,)

  @property
  def centre(self) -> np.ndarray:
    return (np.asarray(self.shape) - 1) / 2.0

  def grid_source_coords(self) -> np.ndarray:
    """Template voxel coordinates of every subject voxel, (3, R, R, S)."""
    axes = [
      (np.arange(n) - c) * sp
      for n, c, sp in zip(self.shape, self.centre, self.spacing, strict=True)
    ]
    coords = np.empty((3, *self.shape), dtype=np.float32)
    m = self.matrix
    for i in range(3):
      mm = (
        m[i, 0] * axes[0][:, None, None]
        + m[i, 1] * axes[1][None, :, None]
        + m[i, 2] * axes[2][None, None, :]
        + self.shift[i]
      ).astype(np.float32)
      coords[i] = (mm + self.disp[i]) / self.spacing[i] + self.centre[i]
    return coords

  def point_source_coords(self, vox: np.ndarray) -> np.ndarray:
    """Template voxel coordinates of arbitrary subject voxel positions (3, ...)."""
    flat = vox.reshape(3, -1)
    mm = (flat - self.centre[:, None]) * self.spacing[:, None]
    src = self.matrix @ mm + self.shift[:, None]
    for i in range(3):
      src[i] += ndi.map_coordinates(self.disp[i], flat, order=1, mode="nearest")
    src = src / self.spacing[:, None] + self.centre[:, None]
    return src.reshape(vox.shape).astype(np.float32)


def random_warp(rng: np.random.Generator, shape, spacing) -> Warp:
  """A random rotation, scaling and shift, plus a smooth elastic field on top."""
  angles = np.deg2rad(rng.uniform(-_MAX_ROT_DEG, _MAX_ROT_DEG, 3))
  scales = rng.uniform(*_SCALE_RANGE, 3)
  shift = rng.uniform(-_MAX_SHIFT_MM, _MAX_SHIFT_MM, 3)
  control = rng.normal(0.0, _ELASTIC_STD_MM, (3, _N_CONTROL, _N_CONTROL, _N_CONTROL))
  bx, by, bz = (_cubic_basis(n, _N_CONTROL) for n in shape)
  disp = np.einsum(
    "ia,jb,kc,dabc->dijk", bx, by, bz, control.astype(np.float32), optimize=True
  ).astype(np.float32)
  return Warp(
    matrix=_rotation(angles) @ np.diag(scales),
    shift=shift,
    disp=disp,
    shape=tuple(shape),
    spacing=np.asarray(spacing, dtype=np.float64),
  )


@functools.lru_cache(maxsize=16)
def _cubic_basis(n: int, k: int) -> np.ndarray:
  """(n, k) matrix interpolating k control values onto n samples (cubic spline).

  A tensor product of these makes upsampling the coarse displacement grid
  three small matrix products instead of a 3-D spline evaluation.
  """
  basis = ndi.zoom(np.eye(k), (n / k, 1.0), order=3, mode="nearest", grid_mode=False)
  assert basis.shape == (n, k)
  return basis.astype(np.float32)


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
  ax, ay, az = angles_rad
  rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
  ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
  rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
  return rz @ ry @ rx


def sample_tissues(template_maps: Template, coords: np.ndarray) -> dict[str, np.ndarray]:
  """GM, WM and CSF fractions of the template at ``coords`` (template voxels), linear."""
  return {
    name: ndi.map_coordinates(
      getattr(template_maps, name), coords, order=1, mode="constant", cval=0.0
    )
    for name in TISSUES
  }
