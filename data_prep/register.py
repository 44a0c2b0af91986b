"""Affine registration of a scan to the MNI152 template (SimpleITK).

Fixed image: the template T1 at 2 mm; the metric is only evaluated inside the
template brain mask dilated by a few mm, so a scan that still has skull, neck
and eyes is matched on its brain and the brain's immediate surroundings.
Metric: Mattes mutual information (works for T1, T2, FLAIR and PD alike, as
their contrasts differ from the T1 template).

Start: scans in native head position often include the neck, so the head's
centre of mass lies ~4 cm below the brain's centre and a moments start lands
in a wrong optimum. The start instead places the template brain's top
`_VERTEX_GAP_MM` below the top of the head, centred left-right and
front-back on the upper head. Then rigid, then affine (the affine stage
sees the scan with its scalp cut away by the rigidly placed, dilated template
brain mask, and starts from a typical brain size with a plausibility bound on
growth: see _AFFINE_START_SCALES).

Speed (registration version 3): the scan is registered at the template's 2 mm
(finer detail only costs time), and the metric computes its image gradients at
the sampled points rather than filtering the whole scan into a gradient image
at every pyramid level (that set-up had been most of the time). The affine
stage samples 8 % of the voxels at 2 mm (25 % at 4 mm as well made
registration QC flag one IXI scan). Version 4: the rigid search runs at 8 mm
only (a start for the affine stage, which refines at 4 and 2 mm), the
affine search stops at a 5 um step, and a fit registration QC flags is searched
again from smaller starts (RETRY_START_SCALES; data_prep.pipeline). On the 184
IXI T1 scans each version kept the brain-mask Dice against their parcellations
(docs/benchmarks_data.md); version 3 fitted the three scans version 2 had placed
over the skull.

Single-threaded and with a fixed sampling seed, so the result is
reproducible; builds get their parallelism from one process per core.

Returns the template-world -> scan-world map as a 4x4 RAS matrix: the only
geometric fact the rest of the pipeline and the inverse mapping need.
"""

import functools

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from data_prep import orient, resample, template

# Part of the preprocessing cache key: bump when registration results change.
VERSION = 4
_FIXED_SPACING_MM = 2.0
_MASK_DILATION_MM = 4.0
_HEAD_CUT_MM = 8.0
_VERTEX_GAP_MM = 8.0
_UPPER_HEAD_MM = 100.0
# Fraction of fixed-mask voxels sampled per pyramid level (shrink factor -> fraction).
_SAMPLING = {4: 1.0, 2: 0.5, 1: 0.08}
# Pyramid levels (shrink factors of the 2 mm template) of the rigid and the affine search.
_RIGID_LEVELS = (4,)
_AFFINE_LR = 0.3
# The affine search stops when its step falls below this (parameters scaled to mm of shift):
# 5 um, far below a 2 mm voxel; 1 um took a third longer for the same fit.
_AFFINE_MIN_STEP = 5e-3
_AFFINE_LEVELS = (2, 1)
# Scale prior. The MNI152 2009 brain is larger than nearly every adult brain: on IXI the
# template -> scan volume scale (det) of good fits was 0.67-0.86, while the failure mode (the
# template brain pulled over skull and scalp) gave 1.12-1.37. The affine stage therefore
# starts from the template shrunk to a typical size, and a fit that grows the template
# beyond _MAX_VOLUME_SCALE is redone from a smaller start; the smallest fit is kept.
_AFFINE_START_SCALES = (0.92, 0.85, 0.78)
_MAX_VOLUME_SCALE = 1.0
# A fit registration QC flags is searched again from each of these (smaller) starts, and
# the first that passes QC is kept (data_prep.pipeline): atrophied brains, brains with a
# large tumour and scans with skull and neck, where the fit from the first start can grow
# over the skull or drift, are often fitted from a smaller start.
RETRY_START_SCALES = (0.85, 0.78, 0.7)


@functools.lru_cache(maxsize=1)
def _fixed() -> tuple[sitk.Image, sitk.Image, sitk.Image]:
  """(template T1, metric mask, head-cut mask), all at 2 mm."""
  t1, mask, affine = template.load()
  zoom = _FIXED_SPACING_MM / np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
  shape = tuple(int(np.ceil(n / z)) for n, z in zip(t1.shape, zoom, strict=True))
  dst_affine = affine @ np.diag([*zoom, 1.0])

  def small(volume, dtype):
    out = resample.resample_grid(volume.astype(np.float32), affine, shape, dst_affine)
    return orient.to_sitk((out > 0.5).astype(dtype) if dtype == np.uint8 else out, dst_affine)

  fixed = small(t1, np.float32)
  metric_mask = small(ndi.binary_dilation(mask, iterations=int(_MASK_DILATION_MM)), np.uint8)
  cut_mask = small(ndi.binary_dilation(mask, iterations=int(_HEAD_CUT_MM)), np.uint8)
  return fixed, metric_mask, cut_mask


def _method(fixed_mask, seed: int, metric: str, learning_rate: float = 1.0,
            levels=None, iterations: int = 100, min_step: float = 1e-3,
            threads: int = 1) -> sitk.ImageRegistrationMethod:
  if seed <= 0:
    raise ValueError(f"registration_seed must be > 0, got {seed}: SimpleITK takes 0 to mean "
                     "'seed from the clock', which makes the registration irreproducible")
  levels = levels or _RIGID_LEVELS
  reg = sitk.ImageRegistrationMethod()
  reg.SetNumberOfThreads(threads)
  if metric == "mattes_mi":
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
  elif metric == "correlation":
    reg.SetMetricAsCorrelation()
  else:
    raise ValueError(f"registration_metric must be 'mattes_mi' or 'correlation', got {metric!r}")
  reg.SetMetricFixedMask(fixed_mask)
  # Gradients at the sampled points only (a few 10,000), not a gradient image of every voxel.
  reg.SetMetricUseFixedImageGradientFilter(False)
  reg.SetMetricUseMovingImageGradientFilter(False)
  reg.SetMetricSamplingStrategy(reg.RANDOM)
  reg.SetMetricSamplingPercentagePerLevel([_SAMPLING[f] for f in levels], seed)
  reg.SetInterpolator(sitk.sitkLinear)
  reg.SetOptimizerAsRegularStepGradientDescent(
      learningRate=learning_rate, minStep=min_step, numberOfIterations=iterations,
      gradientMagnitudeTolerance=1e-6, relaxationFactor=0.6)
  reg.SetOptimizerScalesFromPhysicalShift()
  reg.SetShrinkFactorsPerLevel(list(levels))
  reg.SetSmoothingSigmasPerLevel([float(f // 2) for f in levels])
  reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
  return reg


def initial_translation(moving: sitk.Image) -> np.ndarray:
  """RAS world point where the template brain centre should land: from the head's top."""
  data, affine = orient.from_sitk(moving)
  head = np.asarray(sitk.GetArrayFromImage(sitk.OtsuThreshold(moving, 0, 1, 200))).T > 0
  head = ndi.binary_opening(head, iterations=1)
  if not head.any():
    head = data > 0
  idx = np.argwhere(head)
  world = idx @ affine[:3, :3].T + affine[:3, 3]
  top = world[:, 2].max()
  upper = world[world[:, 2] > top - _UPPER_HEAD_MM]
  centre = upper.mean(axis=0)
  centre[2] = top - _VERTEX_GAP_MM - _template_brain_half_height()
  return centre


def _template_brain_half_height() -> float:
  """mm from the template brain's centre up to its top (RAS z): half its bounding box's height.

  The template's axes are RAS-aligned (a diagonal affine), so the box in voxels
  (template.brain_bounds, cached) scales to mm by the z voxel size.
  """
  _, _, t_affine = template.load()
  lo, hi = template.brain_bounds()
  return float((hi[2] - lo[2]) / 2.0 * t_affine[2, 2])


def register_affine(moving: sitk.Image, seed: int = 1, metric: str = "mattes_mi",
                    threads: int = 1,
                    start_scales: tuple[float, ...] = _AFFINE_START_SCALES) -> np.ndarray:
  """4x4 RAS map from template world to `moving`'s world.

  `threads` > 1 evaluates the metric in parallel: faster, but the sum's order
  then varies, so the transform varies from run to run (by ~1e-3 in
  its entries, far below a voxel). Builds keep 1 (reproducible; they run one
  volume per core); predict, one scan at a time, takes every core.
  `start_scales`: the affine stage's starts, tried in turn while a fit grows
  beyond _MAX_VOLUME_SCALE (RETRY_START_SCALES: one start each, for a second search).
  """
  fixed, metric_mask, cut_mask = _fixed()
  moving = sitk.Cast(moving, sitk.sitkFloat32)
  if min(moving.GetSpacing()) < _FIXED_SPACING_MM - 1e-3:
    moving = resample.to_spacing(moving, _FIXED_SPACING_MM)
  rigid = sitk.Euler3DTransform()
  t_centre = template.brain_centre_world()
  target = initial_translation(moving)
  flip = orient.LPS_FLIP[:3, :3]
  rigid.SetCenter((flip @ t_centre).tolist())
  rigid.SetTranslation((flip @ (target - t_centre)).tolist())
  reg = _method(metric_mask, seed, metric, threads=threads)
  reg.SetInitialTransform(rigid, inPlace=True)
  reg.Execute(fixed, moving)

  cut = sitk.Resample(cut_mask, moving, rigid.GetInverse(), sitk.sitkNearestNeighbor, 0)
  cut_moving = sitk.Mask(moving, sitk.Cast(cut, sitk.sitkUInt8))
  best = None
  for start_scale in start_scales:
    affine = _affine_stage(fixed, cut_moving, metric_mask, rigid, start_scale, seed, metric,
                           threads)
    volume_scale = abs(np.linalg.det(_matrix(affine)[:3, :3]))
    if best is None or volume_scale < best[0]:
      best = (volume_scale, affine)
    if volume_scale <= _MAX_VOLUME_SCALE:
      break
  return orient.lps_to_ras_transform(_matrix(best[1]))


def _affine_stage(fixed, moving, metric_mask, rigid, start_scale, seed, metric, threads=1):
  """Affine refinement from the rigid fit, the template shrunk by `start_scale` to start."""
  affine = sitk.AffineTransform(3)
  affine.SetMatrix((np.asarray(rigid.GetMatrix()) * start_scale).tolist())
  affine.SetTranslation(rigid.GetTranslation())
  affine.SetCenter(rigid.GetCenter())
  reg = _method(metric_mask, seed, metric, learning_rate=_AFFINE_LR, levels=_AFFINE_LEVELS,
                min_step=_AFFINE_MIN_STEP, threads=threads)
  reg.SetInitialTransform(affine, inPlace=True)
  reg.Execute(fixed, moving)
  return affine


def _matrix(transform) -> np.ndarray:
  """4x4 LPS matrix of a SimpleITK matrix-offset transform: A (p - c) + c + t."""
  a = np.reshape(transform.GetMatrix(), (3, 3))
  c = np.asarray(transform.GetCenter())
  t = np.asarray(transform.GetTranslation())
  m = np.eye(4)
  m[:3, :3] = a
  m[:3, 3] = t + c - a @ c
  return m
