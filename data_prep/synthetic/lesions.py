"""Anomalies with exact masks: MS-like white-matter lesions, and a glioma with mass effect.

A painter replaces healthy tissue fractions (in place) by lesion compartments, which `contrast`
renders with their own intensities, and returns the anomaly mask. Partial volume is kept to the
voxels the mask covers or touches, so intensities never change where the mask says "normal": the
ground truth is exact. All placement and shape randomness comes from the anomaly's own stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from data_prep.synthetic.anatomy import TISSUES, Template, Warp, sample_tissues

ANOMALIES = ("none", "ms", "glioma")


def paint(anomaly, rng, template, warp, tissues, brain_mask, spacing) -> np.ndarray:
  """Inject ``anomaly`` into ``tissues`` and ``brain_mask`` (in place); returns its mask."""
  if anomaly == "ms":
    return paint_ms(rng, tissues, brain_mask, spacing)
  if anomaly == "glioma":
    return paint_glioma(rng, template, warp, tissues, brain_mask, spacing)
  return np.zeros(brain_mask.shape, dtype=bool)


# --- geometry shared by both anomalies -----------------------------------------------------------
def _soft(signed_dist_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
  """Partial-volume fraction from a signed distance (negative inside).

  0.5 on the boundary, linear over one voxel: the binary mask (sd <= 0) is
  exactly the set of voxels whose fraction is >= 0.5.
  """
  return np.clip(0.5 - signed_dist_mm / voxel_mm, 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _RadialBox:
  """The voxels within ``reach`` mm of a centre voxel (a box), in polar terms about it."""

  box: tuple[slice, ...]
  offsets: list[np.ndarray]  # broadcastable mm offsets from the centre, one per axis
  radius: np.ndarray  # mm
  safe_radius: np.ndarray  # radius, but never 0: safe to divide by
  direction: list[np.ndarray]  # unit vector components

  @classmethod
  def around(cls, centre: np.ndarray, reach_mm: float, spacing: np.ndarray, shape) -> _RadialBox:
    half = np.ceil(reach_mm / spacing).astype(int) + 1
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    d = [
      ((np.arange(s.start, s.stop) - c) * sp)
      .astype(np.float32)
      .reshape([-1 if k == i else 1 for k in range(3)])
      for i, (s, c, sp) in enumerate(zip(box, centre, spacing, strict=True))
    ]
    r = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    safe_r = np.maximum(r, 1e-6)
    return cls(
      box=box, offsets=d, radius=r, safe_radius=safe_r, direction=[di / safe_r for di in d]
    )


class _Sampler:
  """Draws voxel indices proportionally to a weight map given on a coarse grid.

  Drawn indices are mapped back to full-resolution voxel centres.
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


@dataclasses.dataclass(frozen=True)
class _CoarseGrid:
  """Every ``step``-th voxel per axis, where lesion placement is decided.

  Distance transforms at R=128 cost ~0.3 s each, and placement does not need
  1.5 mm precision, so weights are computed on this subsampled grid.
  """

  step: int
  spacing: np.ndarray  # mm, of the coarse grid

  @classmethod
  def of(cls, shape, spacing: np.ndarray) -> _CoarseGrid:
    step = max(1, shape[0] // 64)
    return cls(step=step, spacing=spacing * step)

  def subsample(self, volume: np.ndarray) -> np.ndarray:
    return volume[(slice(None, None, self.step),) * 3]

  def depth_mm(self, brain_mask: np.ndarray) -> np.ndarray:
    """Distance of each coarse brain voxel to the outside of the brain."""
    return ndi.distance_transform_edt(self.subsample(brain_mask), sampling=self.spacing)

  def sampler(self, weights: np.ndarray) -> _Sampler:
    return _Sampler(weights, self.step)


# --- multiple sclerosis --------------------------------------------------------------------------
def paint_ms(rng, tissues, brain_mask, spacing) -> np.ndarray:
  """Inject 4-12 MS-like ellipsoidal lesions into ``tissues`` (in place).

  Lesions replace parenchyma (GM/WM) but not CSF, so a lesion touching a
  ventricle does not turn the ventricle bright; accordingly the mask is the
  binary ellipsoid restricted to the brain and to parenchyma-dominated voxels.
  Centres sit on voxel centres, so every lesion owns at least one voxel.
  """
  shape = brain_mask.shape
  periventricular, deep = _ms_samplers(tissues, brain_mask, spacing)
  voxel_mm = float(spacing.min())
  frac = np.zeros(shape, dtype=np.float32)
  inside = np.zeros(shape, dtype=bool)
  for _ in range(int(rng.integers(4, 13))):
    centre = (periventricular if rng.random() < 0.75 else deep).draw(rng)
    box, signed_dist, lesion = _random_ellipsoid(rng, centre, spacing, shape)
    frac[box] = np.maximum(frac[box], _soft(signed_dist, voxel_mm))
    inside[box] |= lesion

  total = tissues["gm"] + tissues["wm"] + tissues["csf"]
  parenchyma = tissues["gm"] + tissues["wm"]
  tissues["lesion"] = frac * parenchyma
  tissues["gm"] = tissues["gm"] * (1.0 - frac)
  tissues["wm"] = tissues["wm"] * (1.0 - frac)
  return inside & brain_mask & (parenchyma >= 0.5 * total)


def _ms_samplers(tissues, brain_mask, spacing) -> tuple[_Sampler, _Sampler]:
  """(periventricular, deep) samplers of lesion centres, both in confident WM (p > 0.8).

  MS favours the tissue around the ventricles: the periventricular sampler
  (used for 75 % of lesions) weights WM by proximity to the ventricles (CSF
  deeper than 20 mm inside the brain); the deep one is uniform in deep WM.
  """
  coarse = _CoarseGrid.of(brain_mask.shape, spacing)
  wm_c, csf_c = coarse.subsample(tissues["wm"]), coarse.subsample(tissues["csf"])
  bm_c = coarse.subsample(brain_mask)
  depth = coarse.depth_mm(brain_mask)
  wm_ok = (wm_c > 0.8) & bm_c
  if not wm_ok.any():
    wm_ok = (wm_c >= 0.8 * wm_c.max()) & bm_c
  ventricles = (csf_c > 0.5) & (depth > 20.0)
  if ventricles.any():
    d_vent = ndi.distance_transform_edt(~ventricles, sampling=coarse.spacing)
    periventricular = coarse.sampler(np.exp(-d_vent / 6.0) * wm_ok)
  else:
    periventricular = coarse.sampler(wm_ok.astype(np.float64))
  deep_wm = wm_ok & (depth > 10.0)
  deep = coarse.sampler((deep_wm if deep_wm.any() else wm_ok).astype(np.float64))
  return periventricular, deep


def _random_ellipsoid(rng, centre, spacing, shape):
  """(box, signed distance in mm, inside) of an ellipsoid with random axes and orientation."""
  semi = rng.uniform(1.5, 6.0, 3)
  rot = _random_rotation(rng)
  frame = _RadialBox.around(centre, semi.max(), spacing, shape)
  d = frame.offsets
  # Coordinates in the ellipsoid frame: u = R^T d.
  u = [rot[0, j] * d[0] + rot[1, j] * d[1] + rot[2, j] * d[2] for j in range(3)]
  rn = np.sqrt(sum((u[j] / semi[j]) ** 2 for j in range(3)))
  # Radial signed distance to the ellipsoid surface along the ray.
  sd = np.where(rn > 0, frame.radius * (1.0 - 1.0 / np.maximum(rn, 1e-6)), -semi.min())
  return frame.box, sd, rn <= 1.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
  q, r = np.linalg.qr(rng.standard_normal((3, 3)))
  q = q * np.sign(np.diag(r))
  if np.linalg.det(q) < 0:
    q[:, 0] = -q[:, 0]
  return q


# --- glioma --------------------------------------------------------------------------------------
def paint_glioma(rng, template, warp, tissues, brain_mask, spacing) -> np.ndarray:
  """Inject one glioma (necrotic core, enhancing ring, oedema) with mass effect.

  The solid part has a mean radius of 8-15 mm modulated by smooth
  directional noise; oedema extends on average 1.3-1.7x further, more in WM
  than GM (vasogenic oedema spreads along white-matter tracts), giving
  whole-tumour volumes of roughly 10-70 ml (effective radius ~13-25 mm).
  Mass effect moves the tissue *before* painting.  Modifies ``tissues`` and
  ``brain_mask`` in place and returns the whole-tumour mask.
  """
  solid_radius = rng.uniform(8.0, 15.0)
  centre = _glioma_centre(rng, solid_radius, tissues, brain_mask, spacing, warp.centre)
  glioma = _GliomaShape.draw(rng, solid_radius)
  frame = _RadialBox.around(centre, glioma.reach_mm, spacing, brain_mask.shape)
  _push_tissues(glioma, frame, centre, template, warp, tissues, spacing)
  gm, wm, csf = (tissues[n][frame.box] for n in TISSUES)
  total = gm + wm + csf
  brain_mask[frame.box] = total > 0.5

  sd_solid, sd_core, sd_oedema = glioma.signed_distances(frame, wm)
  whole = (sd_solid <= 0) | ((sd_oedema <= 0) & (gm + wm >= 0.5 * total))
  whole &= brain_mask[frame.box]
  # Partial volume only next to the mask, so intensities never change in
  # voxels that the mask calls normal (keeps the ground truth exact).
  near = ndi.binary_dilation(whole)
  voxel_mm = float(spacing.min())
  f_oedema, f_solid, f_core = (_soft(sd, voxel_mm) * near for sd in (sd_oedema, sd_solid, sd_core))
  _replace_with_tumour(tissues, frame.box, f_oedema, f_solid, f_core)
  mask = np.zeros(brain_mask.shape, dtype=bool)
  mask[frame.box] = whole
  return mask


def _glioma_centre(rng, solid_radius, tissues, brain_mask, spacing, grid_centre) -> np.ndarray:
  """A centre deep in parenchyma, supratentorial and off the midline, favouring WM.

  Each requirement is relaxed in turn when no voxel of a small brain meets it.
  """
  coarse = _CoarseGrid.of(brain_mask.shape, spacing)
  depth = coarse.depth_mm(brain_mask)
  gm_c, wm_c = coarse.subsample(tissues["gm"]), coarse.subsample(tissues["wm"])
  pos = [
    ((np.arange(0, n, coarse.step) - c) * sp).reshape([-1 if k == i else 1 for k in range(3)])
    for i, (n, c, sp) in enumerate(zip(brain_mask.shape, grid_centre, spacing, strict=True))
  ]
  tissue_ok = coarse.subsample(brain_mask) & (gm_c + wm_c > 0.6)
  weight = (wm_c + 0.3 * gm_c) * tissue_ok
  strict = (
    (depth >= solid_radius + 5.0) & (np.abs(pos[0]) >= 0.5 * solid_radius + 8.0) & (pos[2] >= -5.0)
  )
  sampler = coarse.sampler(weight * strict)
  if sampler.empty:
    sampler = coarse.sampler(weight * (depth >= 0.5 * depth.max()))
  if sampler.empty:
    sampler = coarse.sampler((depth >= depth.max()).astype(np.float64))
  return sampler.draw(rng)


@dataclasses.dataclass(frozen=True)
class _GliomaShape:
  """Random size and outline of one glioma and of its mass effect (lengths in mm)."""

  solid_radius: float
  solid_noise: Callable
  core_noise: Callable
  oedema_noise: Callable
  core_ratio: float  # necrotic core radius / solid radius
  oedema_ratio: float  # mean oedema radius / solid radius
  pushed_radius: float
  taper_start: float
  taper_mm: float

  @classmethod
  def draw(cls, rng: np.random.Generator, solid_radius: float) -> _GliomaShape:
    solid_noise = _direction_noise(rng, 8, 0.45)
    core_noise = _direction_noise(rng, 4, 0.3)
    oedema_noise = _direction_noise(rng, 8, 0.4)
    core_ratio = rng.uniform(0.45, 0.7)
    oedema_ratio = rng.uniform(1.3, 1.7)
    # The solid mass plus swollen (oedematous) tissue pushes its surroundings:
    # R0 ~ solid radius, full push out to the mean oedema radius, then taper.
    pushed_radius = rng.uniform(0.9, 1.2) * solid_radius
    taper_mm = rng.uniform(20.0, 30.0)
    return cls(
      solid_radius=solid_radius,
      solid_noise=solid_noise,
      core_noise=core_noise,
      oedema_noise=oedema_noise,
      core_ratio=core_ratio,
      oedema_ratio=oedema_ratio,
      pushed_radius=pushed_radius,
      taper_start=solid_radius * oedema_ratio,
      taper_mm=taper_mm,
    )

  @property
  def reach_mm(self) -> float:
    """How far from the centre the tumour or its mass effect can change anything."""
    oedema_max = self.solid_radius * self.oedema_ratio * 1.3 * 1.3
    solid_max = self.solid_radius * 1.6
    return max(oedema_max, solid_max, self.taper_start + self.taper_mm)

  def signed_distances(self, frame: _RadialBox, wm: np.ndarray):
    """Radial signed distances (mm, negative inside) to the solid mass, core and oedema."""
    unit, r = frame.direction, frame.radius
    radius = self.solid_radius * np.clip(1.0 + self.solid_noise(unit), 0.55, 1.6)
    wm_smooth = ndi.gaussian_filter(wm, 1.0)  # smooth oedema outline
    oedema_radius = (
      self.solid_radius
      * self.oedema_ratio
      * np.clip(1.0 + self.oedema_noise(unit), 0.7, 1.3)
      * (0.7 + 0.6 * wm_smooth)
    )
    sd_solid = r - radius
    sd_core = r - self.core_ratio * radius * np.clip(1.0 + self.core_noise(unit), 0.6, 1.4)
    sd_oedema = np.minimum(r - oedema_radius, sd_solid)
    return sd_solid, sd_core, sd_oedema


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


def _push_tissues(glioma, frame, centre, template: Template, warp: Warp, tissues, spacing):
  """Apply the mass effect to the tissue maps inside ``frame`` (in place).

  The anatomical warp is recomposed with the radial push and the template
  resampled there, so pushed tissue is interpolated only once.
  """
  rho = mass_effect_source_radius(
    frame.radius, glioma.pushed_radius, glioma.taper_start, glioma.taper_mm
  )
  ratio = (rho / frame.safe_radius).astype(np.float32)
  box_shape = frame.radius.shape
  q = np.empty((3, *box_shape), dtype=np.float32)
  for i in range(3):
    q[i] = centre[i] + np.broadcast_to(frame.offsets[i] * ratio / spacing[i], box_shape)
  pushed = sample_tissues(template, warp.point_source_coords(q))
  # Only overwrite where the push acts: elsewhere keep the original samples
  # bit-for-bit, so the paired healthy subject is identical away from it.
  moved = frame.radius < glioma.taper_start + glioma.taper_mm
  for name, vol in pushed.items():
    tissues[name][frame.box] = np.where(moved, vol, tissues[name][frame.box])


def _replace_with_tumour(tissues, box, f_oedema, f_solid, f_core) -> None:
  """Layer the compartments over the tissue in ``box`` (in place), outermost first.

  Oedema replaces parenchyma only (it is swollen tissue); the enhancing solid
  part and then the necrotic core replace everything beneath them.
  """
  gm, wm, csf = (tissues[n][box] for n in TISSUES)
  total = gm + wm + csf
  channels = {"gm": gm, "wm": wm, "csf": csf}
  channels["oedema"] = f_oedema * (gm + wm)
  channels["gm"] = gm * (1 - f_oedema)
  channels["wm"] = wm * (1 - f_oedema)
  for name, frac in (("enhancing", f_solid), ("necrosis", f_core)):
    for k in channels:
      channels[k] = channels[k] * (1 - frac)
    channels[name] = frac * total
  for name, vol in channels.items():
    if name not in tissues:
      tissues[name] = np.zeros(tissues["gm"].shape, dtype=np.float32)
    tissues[name][box] = vol
