"""Resampling: to an isotropic working spacing, and between grids through a world map.

`to_spacing` (SimpleITK) makes every scan comparable in voxel size before N4 and
registration, with Gaussian anti-aliasing when it downsamples. `resample_grid`
(numpy/scipy) maps any volume onto any grid through a 4x4 RAS world-to-world
transform; the forward map to the template grid and the inverse map back to
the original scan are both this one function, so they cannot disagree.
"""

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi


def to_spacing(image: sitk.Image, spacing_mm: float) -> sitk.Image:
  """`image` resampled (linear) onto an isotropic grid covering the same extent."""
  old_spacing = np.asarray(image.GetSpacing())
  new_spacing = np.full(3, float(spacing_mm))
  if np.allclose(old_spacing, new_spacing, atol=1e-3):
    return image
  sigma = antialias_sigma(old_spacing, new_spacing)
  if np.any(sigma > 0):
    image = _smoothed(image, sigma)
  size = np.maximum(np.round(np.asarray(image.GetSize()) * old_spacing / new_spacing), 1)
  return sitk.Resample(image, [int(s) for s in size], sitk.Transform(), sitk.sitkLinear,
                       image.GetOrigin(), new_spacing.tolist(), image.GetDirection(), 0.0,
                       sitk.sitkFloat32)


def _smoothed(image: sitk.Image, sigma_voxels: np.ndarray) -> sitk.Image:
  """`image` under a sampled Gaussian (sigma per x, y, z axis, in voxels).

  resample_grid's anti-aliasing filter, with the edge voxels repeated beyond the
  border (as SimpleITK's filter did) rather than zeros. SimpleITK's recursive
  Gaussian approximates a Gaussian poorly below a voxel's sigma, the usual case
  here (1 mm to 1.5 mm is 0.25 voxels), and took several times as long.
  """
  array = sitk.GetArrayViewFromImage(image)  # (z, y, x)
  smooth = sitk.GetImageFromArray(ndi.gaussian_filter(array, sigma_voxels[::-1], mode="nearest"))
  smooth.CopyInformation(image)
  return smooth


def antialias_sigma(src_spacing, dst_spacing) -> np.ndarray:
  """Gaussian sigma (source voxels) before downsampling: (factor - 1) / 2, 0 if upsampling."""
  factor = np.asarray(dst_spacing, dtype=float) / np.asarray(src_spacing, dtype=float)
  return np.maximum((factor - 1.0) / 2.0, 0.0)


def resample_grid(src: np.ndarray, src_affine: np.ndarray, dst_shape, dst_affine: np.ndarray,
                  dst_to_src_world: np.ndarray | None = None, order: int = 1,
                  antialias: bool = True) -> np.ndarray:
  """`src` (x, y, z) sampled at every voxel of the destination grid.

  A destination voxel's world point p (RAS, via `dst_affine`) is mapped to
  `dst_to_src_world @ p` in the source's world and interpolated there
  (`order` 0: nearest, for label maps; 1: linear). Points outside the source
  read 0. With `antialias`, the source is Gaussian-smoothed when the
  destination is coarser, so thin structures keep their partial volume.
  """
  world = np.eye(4) if dst_to_src_world is None else np.asarray(dst_to_src_world, float)
  vox = np.linalg.inv(np.asarray(src_affine, float)) @ world @ np.asarray(dst_affine, float)
  src = np.asarray(src, dtype=np.float32)
  if antialias and order > 0:
    # Destination step measured in source voxels, along each source axis.
    step = np.abs(vox[:3, :3]).max(axis=1)
    sigma = np.maximum((step - 1.0) / 2.0, 0.0)
    if np.any(sigma > 0):
      src = ndi.gaussian_filter(src, sigma, mode="constant")
  return ndi.affine_transform(src, vox[:3, :3], offset=vox[:3, 3], output_shape=tuple(dst_shape),
                              order=order, mode="constant", cval=0.0, prefilter=False)

