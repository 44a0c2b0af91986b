"""Reorientation to RAS and conversion between nibabel and SimpleITK.

Scans arrive in every voxel order (LPS, PSR, LAS, ...). Reorienting to the
closest RAS order only permutes and flips voxel axes, so world coordinates are
unchanged and no interpolation happens. nibabel affines are RAS world (mm);
SimpleITK works in LPS world; the two helpers here are the only place that
converts, so every stored transform is in RAS.
"""

import nibabel as nib
import numpy as np
import SimpleITK as sitk

# RAS <-> LPS world: negate x and y.
LPS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def to_ras(img: nib.Nifti1Image) -> nib.Nifti1Image:
  """The same volume in RAS voxel order (no resampling)."""
  return nib.as_closest_canonical(img)


def to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
  """A SimpleITK image of an (x, y, z) array with a RAS voxel-to-world affine."""
  lps = LPS_FLIP @ np.asarray(affine, dtype=np.float64)
  spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
  image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
  image.SetSpacing(spacing.tolist())
  image.SetOrigin(lps[:3, 3].tolist())
  direction = lps[:3, :3] / spacing
  # Tolerate tiny shear from float rounding in headers: project onto the closest rotation.
  u, _, vt = np.linalg.svd(direction)
  image.SetDirection((u @ vt).ravel().tolist())
  return image


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
  """(x, y, z) array and RAS voxel-to-world affine of a SimpleITK image."""
  data = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
  return data, ras_affine(image)


def ras_affine(image: sitk.Image) -> np.ndarray:
  """RAS voxel-to-world affine of a SimpleITK image."""
  lps = np.eye(4)
  lps[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) * np.asarray(image.GetSpacing())
  lps[:3, 3] = image.GetOrigin()
  return LPS_FLIP @ lps


def lps_to_ras_transform(matrix_lps: np.ndarray) -> np.ndarray:
  """A 4x4 world-to-world map in LPS coordinates, expressed in RAS coordinates."""
  return LPS_FLIP @ matrix_lps @ LPS_FLIP
