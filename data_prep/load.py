"""Load and validate NIfTI scans and masks before any processing.

Every later step assumes a finite, non-empty 3D volume and masks on exactly the
scan's voxel grid; checking that here turns bad downloads (truncated gzip,
4D series, empty or NaN volumes, masks resampled elsewhere) into one clear
`InputFileError` naming the file, instead of a crash deep inside SimpleITK.

The header is checked before a voxel is read: a file of a hundred bytes can
declare a volume of terabytes, so its size, voxel spacing and field of view are
held against what a head scan can be, and the memory its processing needs
against what the machine has free.
"""

import contextlib
import gzip
import logging
import os
import zlib

import nibabel as nib
import numpy as np

from data_prep.errors import InputFileError

# Affines of a scan and its masks must agree to this tolerance (mm), else the mask
# was saved on another grid.
_AFFINE_ATOL_MM = 1e-3


# What a head scan can be. A voxel side outside this range, or a field of view
# beyond these bounds on any side, is a broken header or not a head.
VOXEL_MM = (0.05, 15.0)
FIELD_OF_VIEW_MM = (40.0, 500.0)
# A 0.3 mm whole head at 7 T is ~2.5e8 voxels; more is not a head scan.
MAX_VOXELS = 2**28
# Peak memory of preprocessing and predict per voxel of the scan, an upper estimate:
# the float32 scan, its bias-corrected working copy and the three maps written back onto
# its grid in parallel (each float32 with an interpolation buffer), plus a fixed part
# (the template, the model). Measured slope of preprocessing alone: ~4 bytes a voxel.
PEAK_BYTES_PER_VOXEL = 64
FIXED_BYTES = 2**30


def load_volume(path) -> nib.Nifti1Image:
  """A 3D float32 NIfTI image whose voxels are finite and not all zero.

  A trailing singleton 4th axis (X, Y, Z, 1) is squeezed; real 4D series and
  2D images are refused, as are headers no head scan has (check_header).
  """
  img = _read(path)
  check_header(path, img)
  data = _data(path, img)
  if not np.isfinite(data).all():
    raise InputFileError(path, f"{int((~np.isfinite(data)).sum())} NaN/inf voxels")
  if not np.any(data):
    raise InputFileError(path, "all voxels are zero")
  header = img.header.copy()  # keeps both orientations and their codes (orientation_note)
  header.set_data_dtype(np.float32)
  return nib.Nifti1Image(data.astype(np.float32, copy=False), img.affine, header)


def load_mask(path, reference: nib.Nifti1Image, reference_path) -> nib.Nifti1Image:
  """A uint8 label volume (kept as labels) on exactly the grid of `reference`."""
  img = _read(path)
  if _spatial_shape(path, img) != reference.shape:
    raise InputFileError(path, f"mask shape {img.shape} differs from {reference.shape} of "
                               f"{os.path.basename(str(reference_path))}: mask on another grid")
  if not np.allclose(img.affine, reference.affine, atol=_AFFINE_ATOL_MM):
    raise InputFileError(path, f"mask affine differs from that of "
                               f"{os.path.basename(str(reference_path))}: mask on another grid")
  data = _data(path, img)
  if not np.isfinite(data).all():
    raise InputFileError(path, "NaN/inf voxels in mask")
  labels = np.rint(data)
  if labels.min() < 0 or labels.max() > 255:
    raise InputFileError(path, f"mask labels outside 0..255 ({labels.min()}..{labels.max()})")
  return nib.Nifti1Image(labels.astype(np.uint8), reference.affine)


def check_header(path, img: nib.Nifti1Image) -> None:
  """Refuses, before any voxel is read, a header that no head scan has or this machine can hold."""
  shape = _spatial_shape(path, img)
  voxels = int(np.prod(shape, dtype=np.int64))
  if voxels > MAX_VOXELS:
    raise InputFileError(path, f"the header declares {' x '.join(map(str, shape))} voxels "
                               f"({voxels:.3g}), more than any head scan ({MAX_VOXELS:.3g}): "
                               "a broken header, or resample the scan first")
  affine = img.affine
  if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
    raise InputFileError(path, "the header's voxel-to-world affine is not finite or collapses "
                               "an axis (sform/qform all zero or NaN): the file's orientation "
                               "is lost; fix the header")
  spacing = np.linalg.norm(affine[:3, :3], axis=0)
  if spacing.min() < VOXEL_MM[0] or spacing.max() > VOXEL_MM[1]:
    raise InputFileError(path, f"voxel size {_mm(spacing)} mm is outside what a head scan has "
                               f"({VOXEL_MM[0]:g}-{VOXEL_MM[1]:g} mm): a broken header?")
  extent = spacing * np.asarray(shape)
  if extent.min() < FIELD_OF_VIEW_MM[0] or extent.max() > FIELD_OF_VIEW_MM[1]:
    raise InputFileError(path, f"field of view {_mm(extent)} mm is not a head's (each side "
                               f"{FIELD_OF_VIEW_MM[0]:.0f}-{FIELD_OF_VIEW_MM[1]:.0f} mm): "
                               "wrong voxel sizes in the header, or not a head scan")
  dtype = img.get_data_dtype()
  if dtype.kind == "c":
    raise InputFileError(path, f"complex-valued voxels ({dtype}): save the magnitude image "
                               "(its imaginary part would be lost silently)")
  if dtype.fields is not None or dtype.kind not in "biuf":
    raise InputFileError(path, f"voxel type {dtype} is not a grey-level image (RGB?)")
  needed = voxels * PEAK_BYTES_PER_VOXEL + FIXED_BYTES
  available = available_memory()
  if available is not None and needed > available:
    raise InputFileError(path, f"{' x '.join(map(str, shape))} voxels need about "
                               f"{needed / 2**30:.1f} GB to process, this machine has "
                               f"{available / 2**30:.1f} GB free: resample the scan first")


def available_memory() -> int | None:
  """Bytes the system could give this process now (Linux's MemAvailable), None if unknown."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def orientation_note(img: nib.Nifti1Image) -> str | None:
  """Which of the header's two orientations was used, when both are set and disagree."""
  header = img.header
  sform, sform_code = header.get_sform(coded=True)
  qform, qform_code = header.get_qform(coded=True)
  if sform is None or qform is None:
    return None
  corners = np.array([[0, 0, 0, 1], [*img.shape[:3], 1]], float).T
  shift = float(np.abs(sform @ corners - qform @ corners).max())
  if shift <= 1.0:
    return None
  return (f"the header's sform (code {int(sform_code)}) and qform (code {int(qform_code)}) "
          f"disagree by up to {shift:.1f} mm; the sform was used, as nibabel and most viewers "
          "do, and the outputs carry both as in the input")


def _mm(values) -> str:
  return " x ".join(f"{v:.3g}" for v in values)


def _spatial_shape(path, img) -> tuple[int, ...]:
  shape = img.shape
  if len(shape) == 4 and shape[3] == 1:
    shape = shape[:3]
  if len(shape) != 3:
    raise InputFileError(path, f"expected a 3D volume, got shape {img.shape}")
  if min(shape) < 2:
    raise InputFileError(path, f"expected a 3D volume, got a 2D image of shape {img.shape}")
  return shape


@contextlib.contextmanager
def _nibabel_quiet():
  """nibabel prints each header problem it checks for; the one that stops it is our error line."""
  logger = nib.imageglobals.logger
  handlers, propagate = list(logger.handlers), logger.propagate
  silent = logging.NullHandler()  # with no handler at all, Python's last resort would print
  for handler in handlers:
    logger.removeHandler(handler)
  logger.addHandler(silent)
  logger.propagate = False
  try:
    yield
  finally:
    logger.removeHandler(silent)
    for handler in handlers:
      logger.addHandler(handler)
    logger.propagate = propagate


def _read(path) -> nib.Nifti1Image:
  if not os.path.isfile(path):
    raise InputFileError(path, "file not found")
  try:
    with _nibabel_quiet():
      img = nib.load(str(path))
  except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as e:
    raise InputFileError(path, f"not a readable NIfTI file ({e})") from None
  except Exception as e:  # noqa: BLE001  (nibabel's header errors have many types)
    raise InputFileError(path, f"unreadable NIfTI header ({type(e).__name__}: {e})") from None
  if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
    raise InputFileError(path, f"not a NIfTI image ({type(img).__name__})")
  try:
    img.affine, img.get_data_dtype()  # noqa: B018  (both parse header fields)
  except Exception as e:  # noqa: BLE001
    raise InputFileError(path, f"unreadable NIfTI header ({type(e).__name__}: {e})") from None
  return img


def _data(path, img) -> np.ndarray:
  """The voxels as float32 (X, Y, Z); truncated or corrupt gzip streams surface here."""
  shape = _spatial_shape(path, img)
  try:
    data = _scaled_float32(img.dataobj).reshape(shape)
  except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as e:
    raise InputFileError(path, f"truncated or corrupt image data ({e})") from None
  except Exception as e:  # noqa: BLE001  (numpy's casting errors for odd voxel types)
    raise InputFileError(path, f"voxels cannot be read as numbers ({type(e).__name__}: "
                               f"{e})") from None
  return data


def _scaled_float32(dataobj) -> np.ndarray:
  """The stored values times the header's slope plus its intercept, in float32.

  nibabel scales in float64 and then casts: for a 1 mm scan that is a float64
  copy of every voxel and most of the load's time. Scaling in float32 gives the
  same float32 voxels to within one rounding.
  """
  if not nib.is_proxy(dataobj):
    return np.asarray(dataobj, dtype=np.float32)
  data = np.asarray(dataobj.get_unscaled()).astype(np.float32)
  slope, inter = float(dataobj.slope), float(dataobj.inter)
  if slope != 1.0:
    data *= np.float32(slope)
  if inter != 0.0:
    data += np.float32(inter)
  return data
