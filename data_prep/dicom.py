"""Writing a volume as a DICOM series, as a scanner would export it.

For the sample scan a new user tries predict on (`brainseg_jax/sample.py`) and
for tests of DICOM input: one file per axial slice, each with its position,
orientation, spacing and the series' UID and description, which is what
SimpleITK's GDCM series reader (data_prep/sources.py) groups and orders by.
"""

import os
import re
import time

import numpy as np

from data_prep import orient, sources

# A root for UIDs of this project's generated series (not registered: test data only).
_UID_ROOT = "1.2.826.0.1.3680043.8.498"


def write_series(data: np.ndarray, affine: np.ndarray, folder: str, description: str,
                 seed: int = 0) -> list[str]:
  """Writes `data` (x, y, z, in world by the RAS `affine`) as 16-bit slices; returns the files.

  Intensities are scaled linearly to a maximum of 4000 (a scanner's range; MR
  intensities have no unit, and preprocessing normalises them).
  """
  import SimpleITK as sitk

  os.makedirs(folder, exist_ok=True)
  top = float(np.max(np.abs(data))) or 1.0
  slope = top / 4000.0
  image = orient.to_sitk(np.round(np.asarray(data, np.float64) / slope).astype(np.int16), affine)
  series_uid = f"{_UID_ROOT}.{seed}.{int(time.time())}.{abs(hash(description)) % 10**8}"
  prefix = re.sub(r"[^A-Za-z0-9]+", "_", description).strip("_") or "series"
  writer = sitk.ImageFileWriter()
  writer.KeepOriginalImageUIDOn()
  files = []
  with sources.keeping_locale():  # GDCM's writer sets the C locale
    for k in range(image.GetDepth()):
      files.append(_write_slice(writer, image, k, series_uid, description, folder, prefix))
  return files


def _write_slice(writer, image, k: int, series_uid: str, description: str, folder: str,
                 prefix: str) -> str:
  """Slice `k` as one DICOM file with the tags a series reader groups and orders by."""
  direction = image.GetDirection()
  axial = image[:, :, k]
  tags = {
      "0008|0060": "MR", "0008|103e": description, "0020|000d": series_uid + ".1",
      "0020|000e": series_uid, "0020|0011": "1", "0020|0013": str(k + 1),
      "0008|0018": f"{series_uid}.{k + 1}",
      "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
      "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[0:7:3], *direction[1:8:3])),
      "0018|0050": f"{image.GetSpacing()[2]:.6f}",
  }
  for key, value in tags.items():
    axial.SetMetaData(key, value)
  path = os.path.join(folder, f"{prefix}_{k + 1:04d}.dcm")
  writer.SetFileName(path)
  writer.Execute(axial)
  return path
