"""The MNI152 2009a template and its brain mask, from inside the nilearn wheel.

Located with `importlib.util.find_spec` so nilearn's heavy package import never
runs. The shipped T1 is brain-extracted (exactly 0 outside the brain), so its
brain mask is "T1 > 10", holes filled, largest component: the same rule
`data_prep.synthetic` uses, so real and synthetic datasets share one mask.
"""

import functools
import importlib.util
import os

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
_T1_THRESHOLD = 10


def template_dir() -> str:
  spec = importlib.util.find_spec("nilearn")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("nilearn is required for its bundled MNI152 template")
  return os.path.join(spec.submodule_search_locations[0], "datasets", "data")


@functools.lru_cache(maxsize=1)
def load() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(T1 float32 (x, y, z), brain mask bool, RAS affine) at 1 mm; cached, read-only."""
  img = nib.load(os.path.join(template_dir(), _FILE))
  t1 = np.asarray(img.dataobj, dtype=np.float32)
  mask = ndi.binary_fill_holes(t1 > _T1_THRESHOLD)
  labels, n = ndi.label(mask)
  if n > 1:
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == np.argmax(sizes)
  for a in (t1, mask):
    a.setflags(write=False)
  return t1, mask, np.asarray(img.affine, dtype=np.float64)


def brain_centre_world() -> np.ndarray:
  """RAS world point (mm) at the centre of the template brain's bounding box."""
  _, mask, affine = load()
  nz = np.nonzero(mask)
  centre_vox = np.array([(a.min() + a.max()) / 2.0 for a in nz])
  return affine[:3, :3] @ centre_vox + affine[:3, 3]
