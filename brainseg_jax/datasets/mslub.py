"""`mslub`: multiple sclerosis, the open MSLUB layout (Lesjak et al. 2018) (test data).

Only a `test` split: every subject has lesions; anomaly mask = consensus
lesion mask > 0. A `brainmask.nii.gz` beside the scans is used as the brain
mask when present (the preprocessed release has one), else the template's.
"""

import os

import tensorflow_datasets as tfds

from brainseg_jax.datasets import nifti_slices
from data_prep.cases import Case

_FILES = {"flair": "FLAIR", "t1": "T1W", "t2": "T2W"}
_MASK = "consensus_gt"
_BRAIN = "brainmask"


def find_mslub(manual_dir: str, modality: str) -> list[Case]:
  cases = []
  for root, _, files in sorted(os.walk(manual_dir)):
    names = {f.split(".nii")[0]: f for f in files if ".nii" in f}
    if _FILES[modality] in names and _MASK in names:
      brain = os.path.join(root, names[_BRAIN]) if _BRAIN in names else None
      cases.append(Case(subject_id=os.path.basename(root),
                        image=os.path.join(root, names[_FILES[modality]]), split="test",
                        anomaly_type="ms", anomaly_mask=os.path.join(root, names[_MASK]),
                        brain_mask=brain))
  return cases


class Mslub(nifti_slices.NiftiSlicesBuilder):
  """MS lesion scans (FLAIR/T1/T2) with consensus masks, on the MNI152 slice grid."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MODALITIES = ("flair", "t1", "t2")
  BUILDER_CONFIGS = nifti_slices.make_configs(MODALITIES)
  DEFAULT_CONFIG_NAME = "flair_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the MSLUB data set (lit.fe.uni-lj.si/tools, "3D MR image database of MS patients")
  and extract it under manual_dir: one folder per patient holding FLAIR.nii.gz, T1W.nii.gz,
  T2W.nii.gz and consensus_gt.nii.gz (optional brainmask.nii.gz), all on one grid.
  """

  def find_cases(self, manual_dir, modality):
    return find_mslub(manual_dir, modality)
