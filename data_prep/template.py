"""The MNI152 2009a template, its tissue maps and its brain mask, from inside the nilearn wheel.

Real scans are registered to this template and synthetic subjects are made from it, so both
datasets share one file finder and one brain-mask rule. Files are located with
`importlib.util.find_spec`, so nilearn's heavy package import never runs. The shipped T1 is
brain-extracted (exactly 0 outside the brain, >= ~70 inside), so any small threshold gives the
same mask: "T1 > 10", holes filled, largest component.
"""

import functools
import importlib.util
import os

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

_FILE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
_T1_THRESHOLD = 10


def template_dir() -> str:
  spec = importlib.util.find_spec("nilearn")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("nilearn is required for its bundled MNI152 template")
  return os.path.join(spec.submodule_search_locations[0], "datasets", "data")


def image(name: str) -> nib.Nifti1Image:
  """The 1 mm template volume `name`: "t1", or the tissue maps "gm" and "wm".

  Tissue maps are uint8 probabilities scaled to 0..255, on the T1's grid.
  """
  return nib.load(os.path.join(template_dir(), _FILE.format(name)))


def brain_mask(t1: np.ndarray) -> np.ndarray:
  """The brain mask of the brain-extracted template T1: T1 > 10, holes filled, largest part."""
  mask = ndi.binary_fill_holes(t1 > _T1_THRESHOLD)
  labels, n = ndi.label(mask)
  if n <= 1:
    return mask
  sizes = np.bincount(labels.ravel())
  sizes[0] = 0
  return labels == np.argmax(sizes)


@functools.lru_cache(maxsize=1)
def load() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(T1 float32 (x, y, z), brain mask bool, RAS affine) at 1 mm; cached, read-only."""
  img = image("t1")
  t1 = np.asarray(img.dataobj, dtype=np.float32)
  mask = brain_mask(t1)
  for a in (t1, mask):
    a.setflags(write=False)
  return t1, mask, np.asarray(img.affine, dtype=np.float64)


@functools.lru_cache(maxsize=1)
def brain_bounds() -> tuple[np.ndarray, np.ndarray]:
  """(lowest, highest) voxel index of the template brain per axis, both inclusive; read-only."""
  _, mask, _ = load()
  nz = np.nonzero(mask)
  lo = np.array([a.min() for a in nz])
  hi = np.array([a.max() for a in nz])
  for a in (lo, hi):
    a.setflags(write=False)
  return lo, hi


def brain_centre_world() -> np.ndarray:
  """RAS world point (mm) at the centre of the template brain's bounding box."""
  _, _, affine = load()
  lo, hi = brain_bounds()
  centre_vox = (lo + hi) / 2.0
  return affine[:3, :3] @ centre_vox + affine[:3, 3]
