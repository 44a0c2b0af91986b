"""Deterministic synthetic brain MRI subjects with exactly known anomalies.

Unsupervised anomaly-segmentation models are trained on healthy scans only and
evaluated on scans with lesions, which requires voxel-exact ground truth that
real data sets rarely provide.  This module fabricates such data from the
MNI152 2009a template shipped inside the nilearn wheel (so no download and no
licence-restricted data are needed):

* :func:`load_template` resamples the 1 mm tissue maps once onto a small
  working grid (the expensive part, cached per resolution);
* :func:`make_subject` deforms the template (random affine + smooth elastic
  field), optionally injects multiple-sclerosis-like lesions or a glioma with
  mass effect, and renders a FLAIR, T1 or T2 contrast with bias field and
  Rician noise.

Randomness and pairing.  Every subject is a pure function of ``seed``: the
seed drives one :func:`numpy.random.default_rng`, which only hands out
independent sub-seeds for the anatomy, for each anomaly type and for each
modality.  Because the streams are independent, ``make_subject(t, s, m, "ms")``
and ``make_subject(t, s, m, "none")`` share the same anatomy, contrast jitter,
bias field and noise realisation: the healthy subject is the exact
counterfactual of the pathological one (only the lesion, and for a glioma its
mass effect, differ), and the same seed in another modality gives the same
anatomy and lesions, i.e. a consistent multi-modal subject.

Array convention: all volumes are ``(x, y, z)`` in RAS voxel order
(left->right, posterior->anterior, inferior->superior); axial slice ``k`` is
``volume[:, :, k]``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

MODALITIES = ("flair", "t1", "t2")
ANOMALIES = ("none", "ms", "glioma")

# --- working-grid geometry -------------------------------------------------
# In-plane field of view: large enough for the MNI brain (145 x 181 mm) plus
# the random affine, and a "round" clinical value so spacing = 192 / R.
FOV_MM = 192.0
# Axial coverage: the template brain spans 155 mm from the foramen magnum cut
# to the vertex; 160 mm keeps a small margin without wasting slices.
Z_FOV_MM = 160.0
# Number of slices S = round(0.75 * R), hence slice thickness = 160 / S mm,
# i.e. about 1.11 x the in-plane spacing (R=32: 24 x 6.67 mm, R=64: 48 x
# 3.33 mm, R=128: 96 x 1.67 mm).  Slightly thicker slices than in-plane
# spacing mimic typical clinical axial acquisitions and save memory.
SLICE_RATIO = 0.75

# The brain-extracted T1 is exactly 0 outside the brain and >= ~70 inside, so
# any small threshold gives the same mask.
_T1_THRESHOLD = 10

_TEMPLATE_FILE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"

# --- contrast model -----------------------------------------------------------
# Relative mean intensities (WM/GM/CSF ordering and lesion behaviour follow
# clinical appearance; absolute values are arbitrary but kept in [0, 1]).
_CHANNELS = ("csf", "gm", "wm", "lesion", "oedema", "enhancing", "necrosis")
_MEAN_INTENSITY = {
  "flair": {
    "csf": 0.10,
    "gm": 0.65,
    "wm": 0.50,
    "lesion": 0.95,
    "oedema": 0.92,
    "enhancing": 0.80,
    "necrosis": 0.40,
  },
  "t1": {
    "csf": 0.15,
    "gm": 0.55,
    "wm": 0.85,
    "lesion": 0.30,
    "oedema": 0.40,
    "enhancing": 0.50,
    "necrosis": 0.20,
  },
  "t2": {
    "csf": 1.00,
    "gm": 0.60,
    "wm": 0.45,
    "lesion": 0.85,
    "oedema": 0.90,
    "enhancing": 0.70,
    "necrosis": 0.95,
  },
}
_INTENSITY_JITTER = 0.05  # +-5 % per subject and tissue
_CLIP_MAX = 1.5  # headroom for bias field x bright lesions + noise


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


@dataclasses.dataclass(frozen=True)
class Subject:
  """One synthetic scan with its exact ground truth.

  ``image`` is float32, 0 outside ``brain_mask`` and roughly in [0, 1]
  inside (clipped to [0, 1.5]); ``brain_mask`` and ``anomaly_mask`` are
  uint8 0/1 and ``anomaly_mask`` is always inside ``brain_mask``.
  """

  image: np.ndarray
  brain_mask: np.ndarray
  anomaly_mask: np.ndarray
  modality: str
  anomaly: str


# ---------------------------------------------------------------------------
# Template
# ---------------------------------------------------------------------------
def grid_geometry(resolution: int) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
  """Return ``(shape, spacing_mm)`` of the working grid for ``resolution``.

  Kept separate so callers (e.g. model configs) can know the volume shape
  without loading the template.
  """
  r = int(resolution)
  if r < 8:
    raise ValueError(f"resolution must be >= 8, got {resolution}")
  s = max(1, round(SLICE_RATIO * r))
  return (r, r, s), (FOV_MM / r, FOV_MM / r, Z_FOV_MM / s)


def _template_dir() -> str:
  # find_spec does not execute nilearn's (slow, heavy) package __init__.
  spec = importlib.util.find_spec("nilearn")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("nilearn is required for its bundled MNI152 template")
  return os.path.join(spec.submodule_search_locations[0], "datasets", "data")


def _largest_component(mask: np.ndarray) -> np.ndarray:
  labels, n = ndi.label(mask)
  if n <= 1:
    return mask
  sizes = np.bincount(labels.ravel())
  sizes[0] = 0
  return labels == np.argmax(sizes)


@functools.lru_cache(maxsize=8)
def load_template(resolution: int) -> Template:
  """Resample the 1 mm MNI152 2009a template once onto the working grid.

  Grid: ``R x R`` axial in-plane voxels over a fixed 192 mm field of view
  (spacing 192/R mm) and ``S = round(0.75 R)`` slices over 160 mm (see
  :data:`SLICE_RATIO`), axes aligned with RAS world axes and centred on the
  brain's bounding box.  Each map is Gaussian-filtered before linear
  interpolation (sigma = (downsampling factor - 1) / 2 voxels, the usual
  anti-aliasing rule) so thin structures keep their partial-volume fraction
  instead of aliasing.  Cached per resolution because every subject starts
  from it and it is the only step touching the 8.7 M-voxel source volumes.
  """
  shape, spacing = grid_geometry(resolution)
  directory = _template_dir()
  t1_img = nib.load(os.path.join(directory, _TEMPLATE_FILE.format("t1")))
  affine = np.asarray(t1_img.affine, dtype=np.float64)
  t1 = np.asarray(t1_img.dataobj)
  mask = ndi.binary_fill_holes(t1 > _T1_THRESHOLD)
  mask = _largest_component(mask)

  # Crop to the brain (plus a margin for the filter) to make filtering cheap.
  src_voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
  sigma = np.maximum((np.asarray(spacing) / src_voxel - 1.0) / 2.0, 0.0)
  nz = np.nonzero(mask)
  lo_b = np.array([a.min() for a in nz])
  hi_b = np.array([a.max() for a in nz])
  margin = np.ceil(4 * sigma).astype(int) + 2
  lo = np.maximum(lo_b - margin, 0)
  hi = np.minimum(hi_b + margin + 1, mask.shape)
  crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))

  maskf = mask[crop].astype(np.float32)
  maps = {"mask": maskf}
  for name in ("gm", "wm"):
    img = nib.load(os.path.join(directory, _TEMPLATE_FILE.format(name)))
    # Restricting the probability maps to the mask guarantees
    # gm + wm <= brain fraction after (positive, linear) filtering.
    maps[name] = np.asarray(img.dataobj)[crop].astype(np.float32) * (maskf / 255.0)

  # World coordinates of the working grid, centred on the brain bbox.
  centre_vox = (lo_b + hi_b) / 2.0
  centre_world = affine[:3, :3] @ centre_vox + affine[:3, 3]
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

  out = {}
  for name, vol in maps.items():
    smooth = ndi.gaussian_filter(vol, sigma, mode="constant")
    out[name] = np.clip(
      ndi.map_coordinates(smooth, coords, order=1, mode="constant", cval=0.0), 0.0, 1.0
    ).astype(np.float32)
  gm, wm = out["gm"], out["wm"]
  csf = np.clip(out["mask"] - gm - wm, 0.0, 1.0).astype(np.float32)
  brain_mask = (gm + wm + csf) > 0.5
  for arr in (gm, wm, csf, brain_mask):
    arr.setflags(write=False)
  return Template(
    gm=gm, wm=wm, csf=csf, brain_mask=brain_mask, spacing_mm=tuple(float(s) for s in spacing)
  )


# ---------------------------------------------------------------------------
# Anatomical variation
# ---------------------------------------------------------------------------
_N_CONTROL = 5  # elastic control points per axis
_ELASTIC_STD_MM = 3.0
_MAX_ROT_DEG = 8.0
_SCALE_RANGE = (0.92, 1.08)
_MAX_SHIFT_MM = 5.0


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


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
  q, r = np.linalg.qr(rng.standard_normal((3, 3)))
  q = q * np.sign(np.diag(r))
  if np.linalg.det(q) < 0:
    q[:, 0] = -q[:, 0]
  return q


@dataclasses.dataclass(frozen=True)
class _Warp:
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


def _random_warp(rng: np.random.Generator, shape, spacing) -> _Warp:
  angles = np.deg2rad(rng.uniform(-_MAX_ROT_DEG, _MAX_ROT_DEG, 3))
  scales = rng.uniform(*_SCALE_RANGE, 3)
  shift = rng.uniform(-_MAX_SHIFT_MM, _MAX_SHIFT_MM, 3)
  control = rng.normal(0.0, _ELASTIC_STD_MM, (3, _N_CONTROL, _N_CONTROL, _N_CONTROL))
  bx, by, bz = (_cubic_basis(n, _N_CONTROL) for n in shape)
  disp = np.einsum(
    "ia,jb,kc,dabc->dijk", bx, by, bz, control.astype(np.float32), optimize=True
  ).astype(np.float32)
  return _Warp(
    matrix=_rotation(angles) @ np.diag(scales),
    shift=shift,
    disp=disp,
    shape=tuple(shape),
    spacing=np.asarray(spacing, dtype=np.float64),
  )


def _sample_tissues(template: Template, coords: np.ndarray) -> dict[str, np.ndarray]:
  return {
    name: ndi.map_coordinates(getattr(template, name), coords, order=1, mode="constant", cval=0.0)
    for name in ("gm", "wm", "csf")
  }


# ---------------------------------------------------------------------------
# Anomalies
# ---------------------------------------------------------------------------
def _soft(signed_dist_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
  """Partial-volume fraction from a signed distance (negative inside).

  0.5 on the boundary, linear over one voxel: the binary mask (sd <= 0) is
  exactly the set of voxels whose fraction is >= 0.5.
  """
  return np.clip(0.5 - signed_dist_mm / voxel_mm, 0.0, 1.0).astype(np.float32)


def _box(centre: np.ndarray, half_mm: float, spacing: np.ndarray, shape) -> tuple[slice, ...]:
  half = np.ceil(half_mm / spacing).astype(int) + 1
  lo = np.maximum(centre - half, 0)
  hi = np.minimum(centre + half + 1, shape)
  return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _box_offsets_mm(box, centre_vox, spacing):
  """Broadcastable mm offsets of box voxels from ``centre_vox`` (3 arrays)."""
  return [
    ((np.arange(s.start, s.stop) - c) * sp)
    .astype(np.float32)
    .reshape([-1 if k == i else 1 for k in range(3)])
    for i, (s, c, sp) in enumerate(zip(box, centre_vox, spacing, strict=True))
  ]


class _Sampler:
  """Draws voxel indices proportionally to a weight map, on a coarse grid.

  Distance transforms at R=128 cost ~0.3 s each, so weights are computed on
  a grid subsampled by ``step`` (placement does not need 1.5 mm precision)
  and drawn indices are mapped back to full-resolution voxel centres.
  """

  def __init__(self, weights: np.ndarray, step: int):
    self.shape = weights.shape
    self.step = step
    self.cdf = np.cumsum(weights.ravel(), dtype=np.float64)

  @property
  def empty(self) -> bool:
    return self.cdf[-1] <= 0

  def draw(self, rng: np.random.Generator) -> np.ndarray:
    flat = int(np.searchsorted(self.cdf, rng.random() * self.cdf[-1], side="right"))
    flat = min(flat, self.cdf.size - 1)
    return np.array(np.unravel_index(flat, self.shape)) * self.step


def _coarse_step(shape) -> int:
  return max(1, shape[0] // 64)


def _paint_ms(rng, tissues, brain_mask, spacing):
  """Inject 4-12 MS-like ellipsoidal lesions into ``tissues`` (in place).

  Centres are drawn in confident WM (p > 0.8): 75 % weighted by proximity
  to the ventricles (periventricular predilection of MS; ventricles = CSF
  deeper than 20 mm inside the brain), 25 % uniformly in deep WM.  Lesions
  replace parenchyma (GM/WM) but not CSF, so a lesion touching a ventricle
  does not turn the ventricle bright; accordingly the mask is the binary
  ellipsoid restricted to the brain and to parenchyma-dominated voxels.
  Centres sit on voxel centres, so every lesion owns at least one voxel.
  """
  shape = brain_mask.shape
  step = _coarse_step(shape)
  sub = (slice(None, None, step),) * 3
  sp_c = spacing * step
  wm_c, csf_c, bm_c = tissues["wm"][sub], tissues["csf"][sub], brain_mask[sub]
  depth = ndi.distance_transform_edt(bm_c, sampling=sp_c)
  wm_ok = (wm_c > 0.8) & bm_c
  if not wm_ok.any():
    wm_ok = (wm_c >= 0.8 * wm_c.max()) & bm_c
  ventricles = (csf_c > 0.5) & (depth > 20.0)
  if ventricles.any():
    d_vent = ndi.distance_transform_edt(~ventricles, sampling=sp_c)
    peri = _Sampler(np.exp(-d_vent / 6.0) * wm_ok, step)
  else:
    peri = _Sampler(wm_ok.astype(np.float64), step)
  deep_w = wm_ok & (depth > 10.0)
  deep = _Sampler((deep_w if deep_w.any() else wm_ok).astype(np.float64), step)

  voxel_mm = float(spacing.min())
  frac = np.zeros(shape, dtype=np.float32)
  inside = np.zeros(shape, dtype=bool)
  for _ in range(int(rng.integers(4, 13))):
    centre = (peri if rng.random() < 0.75 else deep).draw(rng)
    semi = rng.uniform(1.5, 6.0, 3)
    rot = _random_rotation(rng)
    box = _box(centre, semi.max(), spacing, shape)
    d = _box_offsets_mm(box, centre, spacing)
    # Coordinates in the ellipsoid frame: u = R^T d.
    u = [rot[0, j] * d[0] + rot[1, j] * d[1] + rot[2, j] * d[2] for j in range(3)]
    rn = np.sqrt(sum((u[j] / semi[j]) ** 2 for j in range(3)))
    r = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    # Radial signed distance to the ellipsoid surface along the ray.
    sd = np.where(rn > 0, r * (1.0 - 1.0 / np.maximum(rn, 1e-6)), -semi.min())
    frac[box] = np.maximum(frac[box], _soft(sd, voxel_mm))
    inside[box] |= rn <= 1.0

  total = tissues["gm"] + tissues["wm"] + tissues["csf"]
  parenchyma = tissues["gm"] + tissues["wm"]
  tissues["lesion"] = frac * parenchyma
  tissues["gm"] = tissues["gm"] * (1.0 - frac)
  tissues["wm"] = tissues["wm"] * (1.0 - frac)
  return inside & brain_mask & (parenchyma >= 0.5 * total)


def _direction_noise(rng, n_bumps, amplitude):
  """Smooth random function of direction: a sum of von Mises-Fisher bumps.

  Low-frequency by construction (concentration 3-8), which gives lobulated
  but not spiky tumour outlines.
  """
  dirs = rng.standard_normal((n_bumps, 3))
  dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
  amps = rng.uniform(-amplitude, amplitude, n_bumps)
  kappas = rng.uniform(3.0, 8.0, n_bumps)

  def evaluate(unit):
    out = np.zeros(np.broadcast_shapes(*(c.shape for c in unit)), dtype=np.float32)
    for v, a, k in zip(dirs, amps, kappas, strict=True):
      dot = v[0] * unit[0] + v[1] * unit[1] + v[2] * unit[2]
      out += (a * np.exp(k * (dot - 1.0))).astype(np.float32)
    return out

  return evaluate


def mass_effect_source_radius(
  r: np.ndarray, pushed_radius: float, taper_start: float, taper_mm: float
) -> np.ndarray:
  """Radius in the unperturbed tissue that a point at radius ``r`` shows.

  Model: a ball of radius ``pushed_radius`` is inserted at the centre and
  pushes tissue radially as an incompressible medium would,
  rho0 = cbrt(r^3 - R0^3), and the displacement r - rho0 is tapered to 0
  between ``taper_start`` and ``taper_start + taper_mm`` (cosine) so the
  skull/brain edge far away is untouched.  With R0 <= taper_start both
  factors are non-increasing in r beyond R0, hence rho is monotone: no
  folding.  Points inside R0 collapse onto the centre, which is harmless
  because the tumour is painted over them.  Module-level so that tests can
  switch the mass effect off and check that they notice.
  """
  r = np.asarray(r, dtype=np.float64)
  rho0 = np.cbrt(np.maximum(r**3 - pushed_radius**3, 0.0))
  t = np.clip((r - taper_start) / taper_mm, 0.0, 1.0)
  taper = 0.5 * (1.0 + np.cos(np.pi * t))
  return r - (r - rho0) * taper


def _paint_glioma(rng, template, warp, tissues, brain_mask, spacing):
  """Inject one glioma (necrotic core, enhancing ring, oedema) with mass effect.

  The solid part has a mean radius of 8-15 mm modulated by smooth
  directional noise; oedema extends on average 1.3-1.7x further, more in WM
  than GM (vasogenic oedema spreads along white-matter tracts), giving
  whole-tumour volumes of roughly 10-70 ml (effective radius ~13-25 mm).
  Mass effect is applied to the tissue maps *before* painting by
  recomposing the anatomical warp with a radial push inside a box around the
  tumour and resampling the template there, so the pushed tissue is
  interpolated only once.  Modifies ``tissues`` and
  ``brain_mask`` in place and returns the whole-tumour mask.
  """
  shape = brain_mask.shape
  centre_idx = warp.centre
  solid_r = rng.uniform(8.0, 15.0)

  # --- placement: deep, supratentorial, off the midline, in parenchyma.
  step = _coarse_step(shape)
  sub = (slice(None, None, step),) * 3
  sp_c = spacing * step
  bm_c = brain_mask[sub]
  depth = ndi.distance_transform_edt(bm_c, sampling=sp_c)
  gm_c, wm_c = tissues["gm"][sub], tissues["wm"][sub]
  pos = [
    ((np.arange(0, n, step) - c) * sp).reshape([-1 if k == i else 1 for k in range(3)])
    for i, (n, c, sp) in enumerate(zip(shape, centre_idx, spacing, strict=True))
  ]
  tissue_ok = bm_c & (gm_c + wm_c > 0.6)
  weight = (wm_c + 0.3 * gm_c) * tissue_ok
  strict = (depth >= solid_r + 5.0) & (np.abs(pos[0]) >= 0.5 * solid_r + 8.0) & (pos[2] >= -5.0)
  sampler = _Sampler(weight * strict, step)
  if sampler.empty:
    sampler = _Sampler(weight * (depth >= 0.5 * depth.max()), step)
  if sampler.empty:
    sampler = _Sampler((depth >= depth.max()).astype(np.float64), step)
  centre = sampler.draw(rng)

  # --- shape parameters (all drawn before any conditional work).
  shape_noise = _direction_noise(rng, 8, 0.45)
  core_noise = _direction_noise(rng, 4, 0.3)
  oedema_noise = _direction_noise(rng, 8, 0.4)
  core_ratio = rng.uniform(0.45, 0.7)
  oedema_ratio = rng.uniform(1.3, 1.7)
  # The solid mass plus swollen (oedematous) tissue pushes its surroundings:
  # R0 ~ solid radius, full push out to the mean oedema radius, then taper.
  pushed_r = rng.uniform(0.9, 1.2) * solid_r
  taper_start = solid_r * oedema_ratio
  taper = rng.uniform(20.0, 30.0)

  oedema_max = solid_r * oedema_ratio * 1.3 * 1.3
  solid_max = solid_r * 1.6
  box = _box(centre, max(oedema_max, solid_max, taper_start + taper), spacing, shape)
  d = _box_offsets_mm(box, centre, spacing)
  r = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
  safe_r = np.maximum(r, 1e-6)
  unit = [di / safe_r for di in d]

  # --- mass effect: recompose the warp with the radial push and resample.
  rho = mass_effect_source_radius(r, pushed_r, taper_start, taper)
  ratio = (rho / safe_r).astype(np.float32)
  box_shape = r.shape
  q = np.empty((3, *box_shape), dtype=np.float32)
  for i in range(3):
    q[i] = centre[i] + np.broadcast_to(d[i] * ratio / spacing[i], box_shape)
  pushed = _sample_tissues(template, warp.point_source_coords(q))
  # Only overwrite where the push acts: elsewhere keep the original samples
  # bit-for-bit, so the paired healthy subject is identical away from it.
  moved = r < taper_start + taper
  for name, vol in pushed.items():
    tissues[name][box] = np.where(moved, vol, tissues[name][box])
  gm, wm, csf = (tissues[n][box] for n in ("gm", "wm", "csf"))
  total = gm + wm + csf
  brain_mask[box] = total > 0.5

  # --- compartments (signed radial distances, mm).
  radius = solid_r * np.clip(1.0 + shape_noise(unit), 0.55, 1.6)
  wm_smooth = ndi.gaussian_filter(wm, 1.0)  # smooth oedema outline
  oedema_radius = (
    solid_r * oedema_ratio * np.clip(1.0 + oedema_noise(unit), 0.7, 1.3) * (0.7 + 0.6 * wm_smooth)
  )
  voxel_mm = float(spacing.min())
  sd_solid = r - radius
  sd_core = r - core_ratio * radius * np.clip(1.0 + core_noise(unit), 0.6, 1.4)
  sd_oedema = np.minimum(r - oedema_radius, sd_solid)
  parenchyma = gm + wm
  whole = ((sd_solid <= 0) | ((sd_oedema <= 0) & (parenchyma >= 0.5 * total))) & brain_mask[box]
  # Partial volume only next to the mask, so intensity changes never leak
  # into voxels that the mask calls normal (keeps the ground truth exact).
  near = ndi.binary_dilation(whole)
  f_oedema = _soft(sd_oedema, voxel_mm) * near
  f_solid = _soft(sd_solid, voxel_mm) * near
  f_core = _soft(sd_core, voxel_mm) * near

  channels = {"gm": gm, "wm": wm, "csf": csf}
  channels["oedema"] = f_oedema * parenchyma
  channels["gm"] = gm * (1 - f_oedema)
  channels["wm"] = wm * (1 - f_oedema)
  for name, frac in (("enhancing", f_solid), ("necrosis", f_core)):
    for k in channels:
      channels[k] = channels[k] * (1 - frac)
    channels[name] = frac * total
  for name, vol in channels.items():
    if name not in tissues:
      tissues[name] = np.zeros(shape, dtype=np.float32)
    tissues[name][box] = vol

  mask = np.zeros(shape, dtype=bool)
  mask[box] = whole
  return mask


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------
def _bias_field(rng, shape) -> np.ndarray:
  """exp of a random quadratic polynomial, peak |log| in 0.10-0.15 (+-10-15 %).

  Quadratic is enough to mimic coil sensitivity, which is smooth on the scale
  of the head, and is cheap to evaluate by broadcasting.
  """
  x, y, z = (
    np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape([-1 if k == i else 1 for k in range(3)])
    for i, n in enumerate(shape)
  )
  coef = rng.standard_normal(9).astype(np.float32)
  amplitude = rng.uniform(0.10, 0.15)
  terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
  field = np.zeros(shape, dtype=np.float32)
  for c, t in zip(coef, terms, strict=True):
    field += c * t
  field -= field.mean()
  field *= amplitude / max(float(np.abs(field).max()), 1e-6)
  return np.exp(field)


def make_subject(
  template: Template, seed: int, modality: str = "flair", anomaly: str = "none"
) -> Subject:
  """Generate one synthetic subject; bit-identical for identical arguments.

  Pipeline: random anatomy (affine + elastic, one linear resampling of the
  tissue maps), optional anomaly with exact mask, tissue-weighted contrast
  with +-5 % per-subject jitter of the tissue means, multiplicative bias
  field, Rician noise (sigma 2-3 % of the WM intensity), then zero outside
  the brain and clip to [0, 1.5].  See the module docstring for how the
  seed is split so that healthy/pathological and multi-modal subjects with
  the same seed are paired.
  """
  if modality not in MODALITIES:
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
  if anomaly not in ANOMALIES:
    raise ValueError(f"anomaly must be one of {ANOMALIES}, got {anomaly!r}")
  root = np.random.default_rng(seed)
  stream_seeds = root.integers(0, 2**63 - 1, size=1 + len(ANOMALIES) + len(MODALITIES))
  anat_rng = np.random.default_rng(stream_seeds[0])
  anomaly_rng = np.random.default_rng(stream_seeds[1 + ANOMALIES.index(anomaly)])
  contrast_rng = np.random.default_rng(
    stream_seeds[1 + len(ANOMALIES) + MODALITIES.index(modality)]
  )

  shape = template.gm.shape
  spacing = np.asarray(template.spacing_mm, dtype=np.float64)
  warp = _random_warp(anat_rng, shape, spacing)
  tissues = _sample_tissues(template, warp.grid_source_coords())
  brain_mask = (tissues["gm"] + tissues["wm"] + tissues["csf"]) > 0.5

  if anomaly == "ms":
    anomaly_mask = _paint_ms(anomaly_rng, tissues, brain_mask, spacing)
  elif anomaly == "glioma":
    anomaly_mask = _paint_glioma(anomaly_rng, template, warp, tissues, brain_mask, spacing)
  else:
    anomaly_mask = np.zeros(shape, dtype=bool)

  # Draw the jitter for every channel (fixed order) so the stream, hence the
  # bias field and noise, do not depend on which anomaly is present.
  jitter = 1.0 + contrast_rng.uniform(-_INTENSITY_JITTER, _INTENSITY_JITTER, len(_CHANNELS))
  means = {c: _MEAN_INTENSITY[modality][c] * j for c, j in zip(_CHANNELS, jitter, strict=True)}
  image = np.zeros(shape, dtype=np.float32)
  for name, vol in tissues.items():
    image += np.float32(means[name]) * vol

  image *= _bias_field(contrast_rng, shape)
  sigma = np.float32(contrast_rng.uniform(0.02, 0.03) * means["wm"])
  noise = contrast_rng.standard_normal((2, *shape), dtype=np.float32) * sigma
  image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)
  image[~brain_mask] = 0.0
  np.clip(image, 0.0, _CLIP_MAX, out=image)

  return Subject(
    image=image.astype(np.float32, copy=False),
    brain_mask=brain_mask.astype(np.uint8),
    anomaly_mask=(anomaly_mask & brain_mask).astype(np.uint8),
    modality=modality,
    anomaly=anomaly,
  )
