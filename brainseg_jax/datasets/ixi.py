"""`ixi`: healthy adults from the IXI dataset, T1, T2 or PD (training data).

Splits by subject: `train` and a stable ~15 % `validation` (chosen by a hash
of the subject id, so adding subjects never moves the others). No `test`
split: IXI has no lesions. The brain mask is the template's, carried through
the registration (as for every real-scan builder, so train and test brains
are delineated the same way).
"""

import os
import re

from brainseg_jax.datasets import nifti_slices
from data_prep.cases import Case, healthy_split

# IXI002-Guys-0828-T1.nii.gz (IXI download) or IXI013-HH-1212_T1.nii.gz (NiChart copy).
_NAME = re.compile(r"^(IXI\d{3}-[A-Za-z]+-\d+)[-_](T1|T2|PD)\.nii(\.gz)?$")


def find_ixi(manual_dir: str, modality: str) -> list[Case]:
  cases = []
  for root, _, files in sorted(os.walk(manual_dir)):
    for name in sorted(files):
      m = _NAME.match(name)
      if m and m.group(2).lower() == modality:
        cases.append(Case(subject_id=m.group(1), image=os.path.join(root, name),
                          split=healthy_split(m.group(1))))
  return cases


class Ixi(nifti_slices.NiftiSlicesBuilder):
  """IXI healthy brains (T1/T2/PD), preprocessed onto the MNI152 slice grid."""

  VERSION = nifti_slices.tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MODALITIES = ("t1", "t2", "pd")
  BUILDER_CONFIGS = nifti_slices.make_configs(MODALITIES)
  DEFAULT_CONFIG_NAME = "t1_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download IXI-T1.tar / IXI-T2.tar / IXI-PD.tar from brain-development.org/ixi-dataset
  and extract them anywhere under manual_dir; files are found recursively by name:
  IXI<id>-<site>-<n>-{T1,T2,PD}.nii.gz (or the NiChart copy's t1/IXI<id>-HH-<n>_T1.nii.gz).
  """

  def find_cases(self, manual_dir, modality):
    return find_ixi(manual_dir, modality)
