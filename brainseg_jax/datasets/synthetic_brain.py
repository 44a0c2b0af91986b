"""`synthetic_brain`: the built-in dataset, generated on first use, no download.

Healthy "subjects" are made from the MNI152 2009a template and tissue maps that
ship inside the nilearn wheel, each varied in shape, contrast, bias field and
noise (see `data_prep.synthetic`). Test subjects carry injected anomalies with
exact masks: MS-like white-matter lesions and glioma-like masses. It is small
enough to build in about a minute on a laptop CPU, and real enough that a model
must learn brain anatomy to reconstruct it.

Splits are by subject: `train` and `validation` hold healthy subjects only
(validation calibrates the anomaly threshold), `test` holds the subjects with
anomalies, all their slices, including the healthy ones.
"""

import concurrent.futures
import dataclasses
import multiprocessing

import nibabel as nib
import numpy as np
import tensorflow_datasets as tfds

from brainseg_jax.datasets import schema
from data_prep import cores, grid, synthetic

# Number of subjects per split; test subjects alternate MS lesions and gliomas.
SPLIT_SIZES = {"train": 24, "validation": 6, "test": 10}
_SPLIT_SEED_OFFSET = {"train": 0, "validation": 100_000, "test": 200_000}


@dataclasses.dataclass
class SyntheticBrainConfig(tfds.core.BuilderConfig):
  modality: str = "flair"
  resolution: int = 64
  seed: int = 0


def _configs():
  return [
      SyntheticBrainConfig(name=f"{modality}_{size}", modality=modality, resolution=size,
                           description=f"{modality.upper()} axial slices, {size}x{size}")
      for modality in synthetic.MODALITIES for size in (32, 64, 128)
  ]


def subject_plan(split: str, seed: int) -> list[tuple[str, int, str]]:
  """(subject id, subject seed, anomaly type) of every subject in a split.

  Seeds are disjoint between splits, so no subject is in two splits.
  """
  plan = []
  for i in range(SPLIT_SIZES[split]):
    anomaly = "none" if split != "test" else ("ms" if i % 2 == 0 else "glioma")
    subject_seed = seed * 1_000_000 + _SPLIT_SEED_OFFSET[split] + i
    plan.append((f"{split}_{i:03d}_{anomaly}", subject_seed, anomaly))
  return plan


def _make_subject(args):
  """Top-level (picklable) so subjects can be generated in worker processes."""
  resolution, seed, modality, anomaly = args
  return synthetic.make_subject(synthetic.load_template(resolution), seed, modality, anomaly)


class SyntheticBrain(tfds.core.GeneratorBasedBuilder):
  """Synthetic brain MRI slices with exact anomaly masks."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Provenance features source_file and modality."}
  BUILDER_CONFIGS = _configs()
  DEFAULT_CONFIG_NAME = "flair_64"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=schema.slice_features(self.builder_config.resolution),
        homepage="https://github.com/brainseg-jax/brainseg_jax",
    )

  def to_original_grid(self, subject_id: str, volume: np.ndarray) -> nib.Nifti1Image:
    """(slices, x, y) -> NIfTI in RAS on the working grid, where every subject was made."""
    del subject_id  # all subjects share the grid
    shape, spacing = grid.grid_geometry(self.builder_config.resolution)
    xyz = np.transpose(np.asarray(volume), (1, 2, 0))
    if xyz.shape != tuple(shape):
      raise ValueError(f"volume of shape {xyz.shape} is not on the {shape} synthetic grid")
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)  # centred on the origin
    return nib.Nifti1Image(xyz, affine)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLIT_SIZES}

  def _generate_examples(self, split):
    cfg = self.builder_config
    plan = subject_plan(split, cfg.seed)
    jobs = [(cfg.resolution, seed, cfg.modality, anomaly) for _, seed, anomaly in plan]
    # Subjects are independent: generate them on every core. "spawn" because
    # the caller may already run JAX threads, which do not survive a fork.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=_num_workers(),
                                                mp_context=context) as pool:
      subjects = pool.map(_make_subject, jobs)
      for (subject_id, seed, anomaly), subject in zip(plan, subjects, strict=True):
        yield from _slices(subject_id, anomaly, subject, f"synthetic:{seed}", cfg.modality)


def _num_workers() -> int:
  return max(1, min(cores.usable(), 8))


def _slices(subject_id, anomaly, subject, source_file, modality):
  num_slices = subject.image.shape[-1]
  for k in range(num_slices):
    yield f"{subject_id}/{k:03d}", {
        "image": subject.image[:, :, k, None].astype(np.float32),
        "brain_mask": subject.brain_mask[:, :, k, None].astype(np.uint8),
        "anomaly_mask": subject.anomaly_mask[:, :, k, None].astype(np.uint8),
        "subject_id": subject_id,
        "slice_index": k,
        "num_slices": num_slices,
        "anomaly_type": anomaly,
        "source_file": source_file,
        "modality": modality,
    }
