"""`lgg`: lower-grade gliomas of the Kaggle "LGG MRI Segmentation" download (Buda et al. 2019).

The tif slices are restacked into NIfTI volumes by `data_prep.kaggle_lgg`
(slice order, orientation, spacing estimated from the head's shape, missing
sequences); then the ordinary pipeline runs, whose affine registration to
MNI152 and carried-back template brain mask are the brain extraction.

Splits, by patient (never by slice), fixed: sha256 of the salted patient id (`TCGA_CS_4941`, see
`SPLIT_SALT`) mod 11; buckets 0-5 `train`, 6 `validation`, 7-10 `test`: 58 / 11 / 41 patients of
the 110, and a patient's split depends on its id alone (a subset gets the same splits). Every
patient has a tumour and every split keeps its masks; as in `elderly_flair`, train and validation
brains leave the tumour voxels out of `brain_mask` (they stay in `anomaly_mask`), so eval's
healthy threshold on validation brains never counts tumour. anomaly_type is "glioma".

"""

import hashlib
import logging
import os

import tensorflow_datasets as tfds

from brainseg_jax.datasets import nifti_slices
from data_prep import kaggle_lgg
from data_prep.cases import Case
from data_prep.errors import InputFileError
from data_prep.shard import Shard

log = logging.getLogger(__name__)

# Split buckets of sha256(f"{salt}:{patient id}") mod 11. The salt is the first s = 0, 1, ... that
# gives the 110 published patients 60/10/40 +- 2 with each of the four large sites (CS, DU, FG, HT)
# in validation and test: 58/11/41 (unsalted: 59/20/31).
SPLIT_SALT = 37
_BUCKETS = 11
_SPLIT_BUCKETS = {"train": range(0, 6), "validation": range(6, 7), "test": range(7, 11)}

def patient_id(folder: str) -> str:
  """`TCGA_CS_4941` of `TCGA_CS_4941_19960909`: the id data.csv uses; else the folder name."""
  m = kaggle_lgg.PATIENT_FOLDER.match(folder)
  return m.group(1) if m else folder


def split_of(patient: str) -> str:
  """The patient's fixed split: adding or removing patients never moves another one."""
  digest = hashlib.sha256(f"{SPLIT_SALT}:{patient}".encode()).hexdigest()
  bucket = int(digest, 16) % _BUCKETS
  return next(split for split, buckets in _SPLIT_BUCKETS.items() if bucket in buckets)


def _restack(job) -> tuple[dict | None, str]:
  """(manifest, "") or (None, the reason): one patient, in a worker process."""
  folder, volumes_dir = job
  try:
    return kaggle_lgg.restack(folder, volumes_dir), ""
  except InputFileError as e:
    return None, str(e)


def find_lgg(manual_dir: str, modality: str, volumes_dir: str, extra=(),
             shard: Shard | None = None) -> list[Case]:
  """One case per patient with this modality (and the `extra` ones as further channels),
  restacked into `volumes_dir` on first use (on every core); with `shard`, only its patients."""
  folders = kaggle_lgg.patient_folders(manual_dir)
  if shard is not None:
    folders = [f for f in folders if shard.holds(os.path.basename(f))]
  from data_prep import runner  # loads SimpleITK: only a build needs it (nifti_slices docstring)
  restacked = runner.parallel_map(_restack, [(f, volumes_dir) for f in folders])
  cases = []
  for folder, (manifest, why) in zip(folders, restacked, strict=True):
    subject = os.path.basename(folder)
    if manifest is None:
      log.warning("skipped %s: %s", subject, why)
      continue
    lacking = [m for m in (modality, *extra) if m in manifest["missing"]]
    if lacking:
      log.warning("skipped %s for %s: its %s channel only repeats FLAIR (sequence not acquired)",
                  subject, "+".join((modality, *extra)), lacking[0])
      continue
    paths = kaggle_lgg.stack_paths(volumes_dir, subject)
    split = split_of(patient_id(subject))
    cases.append(Case(subject_id=subject, image=paths[modality], split=split,
                      anomaly_type="glioma", anomaly_mask=paths["mask"],
                      exclude_anomaly_from_brain=split != "test",
                      extra_images=tuple(paths[m] for m in extra)))
  return cases


class Lgg(nifti_slices.NiftiSlicesBuilder):
  """TCGA lower-grade gliomas (Kaggle LGG MRI Segmentation), restacked onto the MNI152 grid."""

  # Skull on, no brain masks: the template brain mask carried through the registration.
  PREP_OVERRIDES = {"brain_mask": "template"}
  MODALITIES = ("flair", "t1", "t1c")
  # FLAIR, T1 and T1c of one session are restacked from the same tif: in register by construction.
  BUILDER_CONFIGS = nifti_slices.make_configs(MODALITIES, channel_sets=[MODALITIES])
  DEFAULT_CONFIG_NAME = "flair_128"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download "Brain MRI segmentation" (LGG MRI Segmentation) by Mateusz Buda from
  https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation and extract it; manual_dir is
  its kaggle_3m folder (or any folder above it): one folder per patient,
  TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_<n>.tif and ..._<n>_mask.tif.
  Cite Buda, Saha, Mazurowski, Computers in Biology and Medicine 109:218-225 (2019),
  doi:10.1016/j.compbiomed.2019.05.002, and the TCIA TCGA-LGG collection
  (doi:10.7937/K9/TCIA.2016.L4LTD3TK). Terms: the licence on the Kaggle page and TCIA's data
  usage policy for TCGA-LGG (attribution; no attempt to identify patients).
  """

  def volumes_dir(self) -> str:
    """Restacked NIfTI volumes: beside this build's preprocessing cache, shared by all variants."""
    return os.path.join(os.path.dirname(self.prep_work_dir()),
                        f"volumes-v{kaggle_lgg.RESTACK_VERSION}")

  def find_cases(self, manual_dir, modality):
    return find_lgg(manual_dir, modality, self.volumes_dir(), shard=self.shard)

  def find_multichannel_cases(self, manual_dir, modalities):
    return find_lgg(manual_dir, modalities[0], self.volumes_dir(), modalities[1:],
                    shard=self.shard)
