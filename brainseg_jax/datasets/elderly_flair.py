"""`elderly_flair`: older adults' FLAIR with white-matter hyperintensity masks.

Subjects are split by a stable hash of the id: ~40 % `test` (lesions are the
anomalies to find), ~15 % `validation`, the rest `train`. All of them carry
lesions. Chosen way to train on them: in `train` and `validation` the lesion
voxels are removed from `brain_mask` (they stay in `anomaly_mask`), so a loss
or threshold computed inside the brain mask excludes them; eval's healthy
threshold (validation brain voxels) therefore never counts lesion voxels.
The image itself is untouched. anomaly_type is "wmh".
"""

import logging
import os
import re

import tensorflow_datasets as tfds

from brainseg_jax.datasets import nifti_slices
from data_prep.cases import Case, subject_fraction

log = logging.getLogger(__name__)
_FLAIR = re.compile(r"^(.+)_FL\.nii(\.gz)?$")
_TEST_FRACTION = 0.4
_VALIDATION_FRACTION = 0.15


def _split(subject_id: str) -> str:
  f = subject_fraction(subject_id)
  if f < _TEST_FRACTION:
    return "test"
  return "validation" if f < _TEST_FRACTION + _VALIDATION_FRACTION else "train"


def find_elderly(manual_dir: str, modality: str) -> list[Case]:
  del modality  # FLAIR only: the lesion masks are on the FLAIR grid
  flair_dir = os.path.join(manual_dir, "flair")
  cases = []
  for name in sorted(os.listdir(flair_dir)) if os.path.isdir(flair_dir) else []:
    m = _FLAIR.match(name)
    if not m:
      continue
    subject = m.group(1)
    mask = os.path.join(manual_dir, "wmh", f"{subject}_FL_DLWMLS.nii.gz")
    split = _split(subject)
    cases.append(Case(subject_id=subject, image=os.path.join(flair_dir, name), split=split,
                      anomaly_type="wmh", anomaly_mask=mask if os.path.exists(mask) else None,
                      exclude_anomaly_from_brain=split != "test"))
  for case in cases:
    if not case.anomaly_mask:
      log.warning("skipped %s: no lesion mask wmh/%s_FL_DLWMLS.nii.gz", case.image,
                  case.subject_id)
  return [c for c in cases if c.anomaly_mask]


class ElderlyFlair(nifti_slices.NiftiSlicesBuilder):
  """Elderly FLAIR with automated white-matter lesion masks, on the MNI152 slice grid."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MODALITIES = ("flair",)
  BUILDER_CONFIGS = nifti_slices.make_configs(MODALITIES)
  DEFAULT_CONFIG_NAME = "flair_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  manual_dir holds flair/<Subj>_FL.nii.gz and wmh/<Subj>_FL_DLWMLS.nii.gz (lesion mask on the
  FLAIR grid), as in the NiChart demo data (../shared/data/elderly_flair). Subjects without a
  lesion mask are left out.
  """

  def find_cases(self, manual_dir, modality):
    return find_elderly(manual_dir, modality)
