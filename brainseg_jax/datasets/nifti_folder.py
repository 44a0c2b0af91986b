"""`nifti_folder`: your own scans, healthy or with lesions, in a plain folder layout.

    manual_dir/images/<subject>.nii.gz         (or images/<modality>/<subject>.nii.gz)
    manual_dir/lesion_masks/<subject>.nii.gz   optional, on the image's grid
    manual_dir/brain_masks/<subject>.nii.gz    optional, on the image's grid

Subjects with a lesion mask go to `test` (anomaly_type "lesion"); the others
are healthy and split by a stable hash into `train` and ~15 % `validation`.
A mask whose name matches no image is logged and ignored.
"""

import logging
import os
import re

import tensorflow_datasets as tfds

from brainseg_jax.datasets import nifti_slices
from data_prep.cases import Case, healthy_split

log = logging.getLogger(__name__)
_EXT = re.compile(r"\.nii(\.gz)?$")


def _by_subject(folder: str) -> dict[str, str]:
  if not os.path.isdir(folder):
    return {}
  return {_EXT.sub("", f): os.path.join(folder, f) for f in sorted(os.listdir(folder))
          if _EXT.search(f)}


def find_folder(manual_dir: str, modality: str) -> list[Case]:
  image_dir = os.path.join(manual_dir, "images", modality)
  if not os.path.isdir(image_dir):
    image_dir = os.path.join(manual_dir, "images")
  images = _by_subject(image_dir)
  lesions = _by_subject(os.path.join(manual_dir, "lesion_masks"))
  brains = _by_subject(os.path.join(manual_dir, "brain_masks"))
  for subject in sorted((set(lesions) | set(brains)) - set(images)):
    log.warning("mask %s matches no image in %s: ignored",
                lesions.get(subject) or brains.get(subject), image_dir)
  cases = []
  for subject, path in images.items():
    lesion = lesions.get(subject)
    cases.append(Case(subject_id=subject, image=path,
                      split="test" if lesion else healthy_split(subject),
                      anomaly_type="lesion" if lesion else "none", anomaly_mask=lesion,
                      brain_mask=brains.get(subject)))
  return cases


class NiftiFolder(nifti_slices.NiftiSlicesBuilder):
  """Any NIfTI scans in a folder (healthy and/or lesioned), on the MNI152 slice grid."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MODALITIES = ("t1", "t2", "flair", "pd", "t1c")
  BUILDER_CONFIGS = nifti_slices.make_configs(MODALITIES)
  DEFAULT_CONFIG_NAME = "t1_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def find_cases(self, manual_dir, modality):
    return find_folder(manual_dir, modality)
