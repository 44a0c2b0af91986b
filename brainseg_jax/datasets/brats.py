"""`brats_glioma`: gliomas, BraTS layouts (2020/2021, 2023) and the TCGA sample (test data).

Every subject has a tumour, so there is only a `test` split (all slices of
every subject, healthy ones included); anomaly mask = whole tumour = label > 0.
Scans are skull-stripped and in SRI24 space; they still go through the same
registration to MNI152 and the template brain mask, like every other builder.
"""

import logging
import os
import re

import tensorflow_datasets as tfds

from brainseg_jax.datasets import nifti_slices
from data_prep.cases import Case

log = logging.getLogger(__name__)

# File-name suffixes per modality (first match wins), and of the label map.
_SUFFIXES = {
    "flair": ("_flair", "-t2f", "_fla_bet_normalized"),
    "t1": ("_t1", "-t1n", "_t1_bet_normalized"),
    "t1c": ("_t1ce", "-t1c", "_t1c_bet_normalized"),
    "t2": ("_t2", "-t2w", "_t2_bet_normalized"),
}
_LABELS = ("_seg", "-seg", "_tumor_fusion_mav")
_EXT = re.compile(r"\.nii(\.gz)?$")


def find_brats(manual_dir: str, modality: str) -> list[Case]:
  """One case per subject folder holding both the modality and a label map."""
  cases = []
  for root, _, files in sorted(os.walk(manual_dir)):
    subject = os.path.basename(root)
    stems = {_EXT.sub("", f): f for f in files if _EXT.search(f)}
    image = _pick(stems, subject, _SUFFIXES[modality])
    labels = _pick(stems, subject, _LABELS)
    if labels and not image:
      log.warning("skipped %s: no %s scan beside %s", subject, modality, labels)
    if image and labels:
      cases.append(Case(subject_id=subject, image=os.path.join(root, image), split="test",
                        anomaly_type="glioma", anomaly_mask=os.path.join(root, labels)))
  return cases


def _pick(stems: dict, subject: str, suffixes) -> str | None:
  for suffix in suffixes:
    if subject + suffix in stems:
      return stems[subject + suffix]
  return None


class BratsGlioma(nifti_slices.NiftiSlicesBuilder):
  """Glioma scans with whole-tumour masks, preprocessed onto the MNI152 slice grid."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MODALITIES = ("flair", "t1", "t1c", "t2")
  BUILDER_CONFIGS = nifti_slices.make_configs(MODALITIES)
  DEFAULT_CONFIG_NAME = "flair_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put one folder per subject anywhere under manual_dir, named like its files:
  BraTS 2020/2021: BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}.nii.gz
  BraTS 2023: BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}.nii.gz
  TCGA sample: <case>/<case>_{fla,t1,t1c,t2}_bet_normalized.nii.gz + <case>_tumor_fusion_mav.nii.gz
  Only subjects with a label map are used (whole tumour = label > 0).
  """

  def find_cases(self, manual_dir, modality):
    return find_brats(manual_dir, modality)
