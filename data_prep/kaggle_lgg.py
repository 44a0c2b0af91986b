"""Kaggle "LGG MRI Segmentation" tif slices (Buda et al. 2019) restacked into NIfTI volumes.

The download: 110 TCGA-LGG patients, one folder each (`TCGA_CS_4941_19960909`) of axial slices
`<folder>_<n>.tif`, 256 x 256 x 3 channels of 8 bit (pre-contrast T1, FLAIR, post-contrast T1; a
sequence a patient lacks was filled with a copy of FLAIR), and `<folder>_<n>_mask.tif`, the manual
FLAIR-abnormality mask (0/255). Skull on; neither voxel spacing nor orientation is stored.

The rest of data_prep reads NIfTI volumes, so each patient is first restacked (`restack`): slices
in slice-number order (compared as numbers: 10 follows 9), one NIfTI per sequence plus the mask,
cached under `<data_dir>/prep_cache/lgg/volumes-v<N>/` (shared by every modality and resolution,
reused by a rerun). Then the ordinary pipeline runs; with the skull on, the affine registration to
MNI152 and the template brain mask carried back are the brain extraction. A build's `source_file`
is that restacked NIfTI (the grid `to_original_grid` writes results onto); its `stack.json` names
the tif folder and the estimated spacing.

Orientation, read from the images: rows run anterior -> posterior (eyes at the top), slice numbers
inferior -> superior (slice 1 at the skull base or neck), columns patient right -> left (the
radiological display; data.csv's `laterality`, presumably 1 = left, 3 = right, agrees with the
tumour's side of the image in 106 of 107 lateral tumours).

Geometry, estimated from the head's shape (`estimate_spacing`) because the tifs carry none: the
in-plane pixel so that the head's left-right width at the level where its axial cross-section
reaches 80 % of its largest is 145 mm (the head's breadth above the ears), and the
slice spacing so that the height between two such area levels near the top of the head matches
real heads (both measured with the same code on the 23 elderly FLAIR and 184 IXI T1 heads of
../shared/data; `tests/datasets/test_lgg.py` re-measures them). Those heads cut into 4 or 6 mm
slices get their slice spacing within 12-14 % rms (in-plane: 5 %, the spread of head sizes). The
registration absorbed a spacing error of -12 to +33 % (template brain mask Dice >= 0.96 against
the true spacing, one elderly FLAIR) but not -25 % (0.73). On the 110 patients: in-plane
0.67-1.03 mm, slices 2.0-11.7 mm (median 5.5); 18 stacks stop below the top of the head and use a
shorter, less precise height. Check on a patient whose geometry is known: TCGA-DU-7294 is also in
../shared/data/tcga_glioma (BraTS processing, 1 mm); on the template grid its tumour from the tifs
lies within 2 mm (centroid) of that scan's (Dice 0.77 between the two annotations); the two
registrations' scales imply our voxel is ~5 % (in-plane) and ~12 % (slices) too large, if the BraTS
alignment to SRI24 kept the head's size.

Missing sequences: a channel equal to FLAIR on every slice is a copy, not data; that patient is
left out of that modality's build, with a logged reason (FLAIR is never used as T1).
"""

import dataclasses
import json
import logging
import os
import re

import nibabel as nib
import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from data_prep import atomic
from data_prep.errors import InputFileError

log = logging.getLogger(__name__)

# Channel of each sequence in the tifs (the dataset's README: pre-contrast, FLAIR, post-contrast).
CHANNELS = {"t1": 0, "flair": 1, "t1c": 2}
_SLICE = re.compile(r"^(?P<folder>.+)_(?P<n>\d+)\.tif$")
# Patient folders: TCGA_<site>_<case>_<date>.
PATIENT_FOLDER = re.compile(r"^(TCGA_[A-Z0-9]{2}_[A-Z0-9]{4})_\d{8}$")
# Bump when restacked volumes change (geometry estimate, file layout): old caches are not reused.
RESTACK_VERSION = 1

# Head geometry of real heads, measured with `head_profile` on ../shared/data (mean of the means of
# 23 elderly FLAIR and 184 IXI T1 heads): the LR width at the 80 % area level (143 and 146 mm,
# cv 5 % in each set), and the height from each area fraction's level down to the 80 % level
# (cv 13-24 % at 0.3, growing with the fraction).
_WIDTH_LEVEL = 0.8
REFERENCE_WIDTH_MM = 145.0
REFERENCE_HEIGHTS_MM = {0.3: 36.3, 0.4: 31.5, 0.5: 25.8, 0.6: 19.4}
# Thresholded head: voxels above this fraction of the 99th percentile of the non-zero voxels.
_HEAD_THRESHOLD = 0.1
_PLAUSIBLE_SLICE_MM = (1.0, 15.0)


def slice_files(folder: str) -> list[tuple[str, str]]:
  """(image, mask) paths in slice-number order; numbers must run without a gap."""
  name = os.path.basename(folder)
  numbered = {}
  for f in os.listdir(folder):
    m = _SLICE.match(f)
    if m and m.group("folder") == name:
      numbered[int(m.group("n"))] = os.path.join(folder, f)
  if not numbered:
    raise InputFileError(folder, f"no slices named {name}_<n>.tif")
  numbers = sorted(numbered)
  gaps = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
  if gaps:
    raise InputFileError(folder, f"slice numbers {numbers[0]}..{numbers[-1]} miss {gaps[:5]}: "
                                 "a gap would misplace every slice above it")
  pairs = []
  for n in numbers:
    mask = os.path.join(folder, f"{name}_{n}_mask.tif")
    if not os.path.isfile(mask):
      raise InputFileError(mask, "file not found (every slice needs its mask)")
    pairs.append((numbered[n], mask))
  return pairs


def _read_tif(path: str, mode: str) -> np.ndarray:
  try:
    with Image.open(path) as img:
      img.load()
      if mode == "L" and img.mode != "L":
        img = img.convert("L")
      if img.mode != mode:
        raise InputFileError(path, f"expected a {mode} image, got mode {img.mode}")
      return np.asarray(img)
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise InputFileError(path, f"not a readable tif ({e})") from None


def read_stack(pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
  """(slices (n, rows, cols, 3) uint8, masks (n, rows, cols) bool) of one patient."""
  images, masks = [], []
  for image_path, mask_path in pairs:
    image, mask = _read_tif(image_path, "RGB"), _read_tif(mask_path, "L")
    if image.shape[:2] != mask.shape:
      raise InputFileError(mask_path, f"mask {mask.shape} differs from its slice {image.shape[:2]}")
    if images and image.shape != images[0].shape:
      raise InputFileError(image_path, f"slice {image.shape} differs from the first slice "
                                       f"{images[0].shape}")
    images.append(image)
    masks.append(mask > 0)
  return np.stack(images), np.stack(masks)


def missing_sequences(slices: np.ndarray) -> tuple[str, ...]:
  """Modalities whose channel repeats FLAIR on every slice: filled in, not acquired."""
  flair = slices[..., CHANNELS["flair"]]
  return tuple(m for m, c in CHANNELS.items()
               if m != "flair" and np.array_equal(slices[..., c], flair))


def to_volume(stack: np.ndarray) -> np.ndarray:
  """(slice, row, col) -> (col, row, slice): voxel axes patient left, posterior, superior."""
  return np.ascontiguousarray(np.transpose(stack, (2, 1, 0)))


def head_profile(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per axial slice of a (LR, AP, SI) volume: the head's convex-hull area and LR width (voxels).

  The head is the largest 3D component above a fraction of the bright voxels; each slice's convex
  hull closes the dark skull and sinuses, so the area follows the head's outline, not its contrast.
  """
  bright = volume[volume > 0]
  threshold = _HEAD_THRESHOLD * np.percentile(bright, 99) if bright.size else 0.0
  head = ndi.binary_opening(volume > threshold, iterations=2)
  labels, n = ndi.label(head)
  areas, widths = np.zeros(volume.shape[2]), np.zeros(volume.shape[2])
  if n == 0:
    return areas, widths
  sizes = np.bincount(labels.ravel())
  sizes[0] = 0
  head = labels == np.argmax(sizes)
  for k in range(volume.shape[2]):
    points = np.argwhere(head[:, :, k])
    if len(points) < 3:
      continue
    try:
      areas[k] = ConvexHull(points).volume  # a 2D hull's "volume" is its area
    except QhullError:  # all points on a line
      continue
    widths[k] = np.ptp(points[:, 0]) + 1
  return areas, widths


def level_from_top(areas: np.ndarray, fraction: float) -> float | None:
  """Slices (fractional) from the top slice down to where the area first reaches `fraction` of
  its largest; None if the top slice is already there (the stack misses the head's top)."""
  relative = areas[::-1] / areas.max()
  k = int(np.argmax(relative >= fraction))
  if k == 0:
    return None
  return k - 1 + (fraction - relative[k - 1]) / (relative[k] - relative[k - 1])


@dataclasses.dataclass(frozen=True)
class Spacing:
  """Estimated voxel size (mm) of a restacked patient, and how it was found (for the manifest)."""

  inplane_mm: float
  slice_mm: float
  note: str


def estimate_spacing(volume: np.ndarray, where: str = "") -> Spacing:
  """Voxel size of a (LR, AP, SI) head stack from its shape (module docstring: the reference).

  The slice spacing uses the lowest area fraction above the stack's top slice: the longer the
  height measured, the smaller the error (reference heads: cv 13-24 % at 0.3, more above).
  """
  areas, widths = head_profile(volume.astype(np.float32))
  if not areas.any():
    raise InputFileError(where, "no head found in the FLAIR slices")
  width_level = level_from_top(areas, _WIDTH_LEVEL)
  tops = {f: level_from_top(areas, f) for f in REFERENCE_HEIGHTS_MM}
  fraction = next((f for f, top in tops.items() if top is not None), None)
  if width_level is None or fraction is None:
    raise InputFileError(where, f"the top slice already covers {areas[-1] / areas.max():.0%} of "
                                "the head's largest cross-section: the stack misses the top of "
                                "the head, so its voxel size cannot be estimated")
  width_slice = volume.shape[2] - 1 - int(round(width_level))
  inplane = REFERENCE_WIDTH_MM / widths[width_slice]
  slice_mm = REFERENCE_HEIGHTS_MM[fraction] / (width_level - tops[fraction])
  if not _PLAUSIBLE_SLICE_MM[0] <= slice_mm <= _PLAUSIBLE_SLICE_MM[1]:
    raise InputFileError(where, f"estimated slice spacing {slice_mm:.1f} mm is implausible")
  note = (f"in-plane {inplane:.3f} mm (head width {widths[width_slice]:.0f} px at the "
          f"{_WIDTH_LEVEL:.0%} area level), slices {slice_mm:.2f} mm (area levels "
          f"{fraction:.0%}-{_WIDTH_LEVEL:.0%})")
  return Spacing(float(inplane), float(slice_mm), note)


def stack_affine(shape: tuple[int, int, int], spacing: Spacing) -> np.ndarray:
  """Voxel -> RAS world (mm) of a `to_volume` stack, centred on the origin.

  Voxel axes run to the patient's left, posterior and superior, hence the signs.
  """
  affine = np.diag([-spacing.inplane_mm, -spacing.inplane_mm, spacing.slice_mm, 1.0])
  affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape, float) - 1) / 2)
  return affine


def _save_nifti(path: str, data: np.ndarray, affine: np.ndarray) -> None:
  with atomic.atomic_path(path) as tmp:
    nib.save(nib.Nifti1Image(data, affine), tmp)


def stack_paths(out_dir: str, subject: str) -> dict[str, str]:
  """Files of one restacked patient: a NIfTI per modality, the mask, and the manifest."""
  folder = os.path.join(out_dir, subject)
  paths = {m: os.path.join(folder, f"{subject}_{m}.nii.gz") for m in CHANNELS}
  paths["mask"] = os.path.join(folder, f"{subject}_mask.nii.gz")
  paths["manifest"] = os.path.join(folder, "stack.json")
  return paths


def restack(folder: str, out_dir: str) -> dict:
  """The patient's tif slices as NIfTI volumes under `out_dir` (reused if there): its manifest.

  The manifest is written last, so its presence means every volume is complete.
  """
  subject = os.path.basename(os.path.normpath(folder))
  paths = stack_paths(out_dir, subject)
  if os.path.exists(paths["manifest"]):
    with open(paths["manifest"]) as f:
      return json.load(f)
  pairs = slice_files(folder)
  slices, masks = read_stack(pairs)
  flair = to_volume(slices[..., CHANNELS["flair"]])
  spacing = estimate_spacing(flair, folder)
  affine = stack_affine(flair.shape, spacing)
  missing = missing_sequences(slices)
  os.makedirs(os.path.dirname(paths["manifest"]), exist_ok=True)
  for modality, channel in CHANNELS.items():
    if modality not in missing:
      _save_nifti(paths[modality], to_volume(slices[..., channel]), affine)
  _save_nifti(paths["mask"], to_volume(masks.astype(np.uint8)), affine)
  manifest = {"source_folder": os.path.abspath(folder), "slices": len(pairs),
              "inplane_mm": spacing.inplane_mm, "slice_mm": spacing.slice_mm,
              "spacing_note": spacing.note, "missing": list(missing),
              "version": RESTACK_VERSION}
  atomic.write_json(paths["manifest"], manifest)
  return manifest


def patient_folders(manual_dir: str) -> list[str]:
  """Folders holding `<folder>_<n>.tif`, anywhere below manual_dir, one per patient.

  Kaggle's archive has held the data twice (kaggle_3m/ and lgg-mri-segmentation/kaggle_3m/): the
  first copy of a folder name (in path order) is used.
  """
  found = {}
  for root, _, files in sorted(os.walk(manual_dir, followlinks=True)):
    name = os.path.basename(root)
    if not any((m := _SLICE.match(f)) and m.group("folder") == name for f in files):
      continue
    if name in found:
      log.warning("ignored %s: a second copy of %s", root, found[name])
      continue
    found[name] = root
  return [found[name] for name in sorted(found)]


