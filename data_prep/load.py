"""Load and validate NIfTI scans and masks before any processing.

Every later step assumes a finite, non-empty 3D volume and masks on exactly the
scan's voxel grid; checking that here turns bad downloads (truncated gzip,
4D series, empty or NaN volumes, masks resampled elsewhere) into one clear
`InputFileError` naming the file, instead of a crash deep inside SimpleITK.
"""

import gzip
import os
import zlib

import nibabel as nib
import numpy as np

from data_prep.errors import InputFileError

# Affines of a scan and its masks must agree to this tolerance (mm), else the mask
# was saved on another grid.
_AFFINE_ATOL_MM = 1e-3


def load_volume(path) -> nib.Nifti1Image:
  """A 3D float32 NIfTI image whose voxels are finite and not all zero.

  A trailing singleton 4th axis (X, Y, Z, 1) is squeezed; real 4D series and
  2D images are refused.
  """
  img = _read(path)
  data = _data(path, img)
  if not np.isfinite(data).all():
    raise InputFileError(path, f"{int((~np.isfinite(data)).sum())} NaN/inf voxels")
  if not np.any(data):
    raise InputFileError(path, "all voxels are zero")
  return nib.Nifti1Image(data.astype(np.float32), img.affine)


def load_mask(path, reference: nib.Nifti1Image, reference_path) -> nib.Nifti1Image:
  """A uint8 label volume (kept as labels) on exactly the grid of `reference`."""
  img = _read(path)
  data = _data(path, img)
  if data.shape != reference.shape:
    raise InputFileError(path, f"mask shape {data.shape} differs from {reference.shape} of "
                               f"{os.path.basename(str(reference_path))}: mask on another grid")
  if not np.allclose(img.affine, reference.affine, atol=_AFFINE_ATOL_MM):
    raise InputFileError(path, f"mask affine differs from that of "
                               f"{os.path.basename(str(reference_path))}: mask on another grid")
  if not np.isfinite(data).all():
    raise InputFileError(path, "NaN/inf voxels in mask")
  labels = np.rint(data)
  if labels.min() < 0 or labels.max() > 255:
    raise InputFileError(path, f"mask labels outside 0..255 ({labels.min()}..{labels.max()})")
  return nib.Nifti1Image(labels.astype(np.uint8), reference.affine)


def _read(path) -> nib.Nifti1Image:
  if not os.path.isfile(path):
    raise InputFileError(path, "file not found")
  try:
    img = nib.load(str(path))
  except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as e:
    raise InputFileError(path, f"not a readable NIfTI file ({e})") from None
  if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
    raise InputFileError(path, f"not a NIfTI image ({type(img).__name__})")
  return img


def _data(path, img) -> np.ndarray:
  """The voxels as float32 (X, Y, Z); truncated or corrupt gzip streams surface here."""
  shape = img.shape
  if len(shape) == 4 and shape[3] == 1:
    shape = shape[:3]
  if len(shape) != 3:
    raise InputFileError(path, f"expected a 3D volume, got shape {img.shape}")
  if min(shape) < 2:
    raise InputFileError(path, f"expected a 3D volume, got a 2D image of shape {img.shape}")
  try:
    data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
  except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as e:
    raise InputFileError(path, f"truncated or corrupt image data ({e})") from None
  return data
