"""The shared machinery of every real-scan builder: cases in, schema slices out.

A subclass only says where a layout keeps its files (`find_cases`) and what its
manual download looks like (`MANUAL_DOWNLOAD_INSTRUCTIONS`). This base class
preprocesses every case with `data_prep` on all cores (cached per volume under
`<data_dir>/prep_cache/`, so an interrupted build resumes), skips and counts
unusable files, and writes each split's slices in the one slice schema.
BuilderConfig names are `f"{modality}_{resolution}"`, as `get_builder` expects.

The preprocessing modules (`data_prep.cache`, `pipeline`, `runner`) are imported
in the methods that build or map back to a scan: they load SimpleITK (~110 MB
resident), which a training or evaluation process that only reads the built
dataset never needs (tests/test_train.py checks that training does not load it).
"""

import dataclasses
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from brainseg_jax.datasets import schema
from brainseg_jax.errors import UserError
from data_prep.cases import Case
from data_prep.config import PrepConfig
from data_prep.shard import Shard

log = logging.getLogger(__name__)

RESOLUTIONS = (32, 64, 128)


@dataclasses.dataclass
class NiftiSlicesConfig(tfds.core.BuilderConfig):
  modality: str = "t1"
  resolution: int = 128
  # Further modalities stacked after `modality` as image channels.
  extra_modalities: tuple[str, ...] = ()

  @property
  def modalities(self) -> tuple[str, ...]:
    return (self.modality, *self.extra_modalities)


def make_configs(modalities, channel_sets=()) -> list[NiftiSlicesConfig]:
  """One variant per modality and resolution, and per set of modalities taken as channels."""
  sets = [(m,) for m in modalities] + [tuple(s) for s in channel_sets]
  return [NiftiSlicesConfig(name=schema.variant_name(s, r), modality=s[0],
                            extra_modalities=s[1:], resolution=r,
                            description=f"{'+'.join(m.upper() for m in s)} axial slices, {r}x{r}")
          for s in sets for r in RESOLUTIONS]


class NiftiSlicesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base class; not a dataset itself."""

  MODALITIES: tuple[str, ...] = ()
  # Fields of PrepConfig this layout needs changed (e.g. no N4 for z-scored scans).
  PREP_OVERRIDES: dict = {}
  # This machine's part of a build spread over several (`preprocess_shard`); None: all.
  shard: Shard | None = None

  def find_cases(self, manual_dir: str, modality: str) -> list[Case]:
    raise NotImplementedError

  def find_multichannel_cases(self, manual_dir: str, modalities) -> list[Case]:
    """Cases with `extra_images` for modalities[1:]; only layouts with channel sets have them."""
    raise NotImplementedError

  def prep_config(self) -> PrepConfig:
    cfg = self.builder_config
    return dataclasses.replace(PrepConfig(modality=cfg.modality, resolution=cfg.resolution),
                               **self.PREP_OVERRIDES)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=schema.slice_features(self.builder_config.resolution,
                                       len(self.builder_config.modalities)),
        homepage="https://github.com/brainseg-jax/brainseg_jax",
    )

  def prep_work_dir(self) -> str:
    """Per-volume cache of this variant; the PrepConfig hash keeps old settings apart."""
    root = getattr(self, "_data_dir_root", None) or os.path.dirname(self.data_dir)
    return os.path.join(root, "prep_cache", self.name,
                        f"{self.builder_config.name}-{self.prep_config().digest()}")

  def to_original_grid(self, subject_id: str, volume: np.ndarray):
    """A (S, R, R[, 1]) stack of this subject's slices on its original scan's grid.

    Uses the per-volume record the build cached (affines, registration, kept
    slices). Integer stacks (predictions, labels) are resampled nearest.
    """
    from data_prep import cache, pipeline  # imported here: see the module docstring
    path = cache.path_for(self.prep_work_dir(), subject_id)
    if not os.path.exists(path):
      raise UserError(f"dataset {self.name}: no preprocessing record of {subject_id} at {path} "
                      "(the build's cache was removed or built with other preprocessing "
                      "settings); rebuild the dataset or set eval.write_nifti=False")
    order = 0 if np.issubdtype(np.asarray(volume).dtype, np.integer) else 1
    return pipeline.to_original_grid(volume, cache.load(path).record, order=order)

  def _cases(self, manual_dir: str) -> list[Case]:
    """The layout's cases in `manual_dir` (this shard's, with a shard), checked."""
    if not os.path.isdir(manual_dir):
      raise UserError(f"dataset {self.name}: manual_dir {manual_dir} not found. "
                      f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
    cfg = self.builder_config
    cases = (self.find_multichannel_cases(manual_dir, cfg.modalities) if cfg.extra_modalities
             else self.find_cases(manual_dir, cfg.modality))
    if not cases and self.shard is None:  # a shard may hold none of a few subjects
      raise UserError(f"dataset {self.name}: no {self.builder_config.modality} scans found "
                      f"in {manual_dir}. {self.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
    ids = [c.subject_id for c in cases]
    if len(set(ids)) != len(ids):
      raise UserError(f"dataset {self.name}: duplicate subject ids in {manual_dir}")
    if self.shard is not None:
      cases = [c for c in cases if self.shard.holds(c.subject_id)]
    return cases

  def preprocess_shard(self, manual_dir: str, shard: Shard):
    """Preprocess this shard's cases into the shared cache; the dataset is not written.

    Run once per shard (on as many machines, over one data folder); the build
    without a shard then finds every volume cached and writes the dataset.
    """
    from data_prep import runner  # imported here: see the module docstring
    self.shard = shard
    try:
      return runner.run(self._cases(manual_dir), self.prep_config(), self.prep_work_dir())
    finally:
      self.shard = None

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    cases = self._cases(manual_dir)
    from data_prep import runner  # imported here: see the module docstring
    self.prep_summary = runner.run(cases, self.prep_config(), self.prep_work_dir())
    self._leave_out_failed_registrations()
    done = [c for c in cases if c.subject_id in self.prep_summary.done]
    if not done:
      raise UserError(f"dataset {self.name}: every scan in {manual_dir} was skipped; first: "
                      f"{next(iter(self.prep_summary.skipped.values()))}")
    splits = {}
    for case in done:
      splits.setdefault(case.split, []).append(case)
    return {split: self._generate_examples(split_cases) for split, split_cases in splits.items()}

  def _leave_out_failed_registrations(self):
    """Volumes whose registration QC fails move from `done` to `skipped`, with the reason."""
    from data_prep import cache, qc  # imported here: see the module docstring
    summary = self.prep_summary
    for subject_id, path in sorted(summary.done.items()):
      reasons = qc.problems(cache.load(path).qc, self.builder_config.modality)
      if reasons:
        del summary.done[subject_id]
        summary.skipped[subject_id] = f"registration QC failed: {'; '.join(reasons)}"
        log.warning("left out %s: %s", subject_id, summary.skipped[subject_id])

  def _generate_examples(self, cases):
    from data_prep import cache  # imported here: see the module docstring
    modality = self.builder_config.modality
    for case in sorted(cases, key=lambda c: c.subject_id):
      result = cache.load(self.prep_summary.done[case.subject_id])
      brain = result.brain_mask.astype(bool)
      anomaly = result.anomaly_mask.astype(bool)
      if case.exclude_anomaly_from_brain:
        brain = brain & ~anomaly
      num_slices = result.image.shape[-1]
      channels = np.concatenate([result.image[..., None], _extra(result)], axis=-1)
      for k in range(num_slices):
        yield f"{case.subject_id}/{k:03d}", {
            "image": channels[:, :, k, :].astype(np.float32),
            "brain_mask": brain[:, :, k, None].astype(np.uint8),
            "anomaly_mask": anomaly[:, :, k, None].astype(np.uint8),
            "subject_id": case.subject_id,
            "slice_index": k,
            "num_slices": num_slices,
            "anomaly_type": case.anomaly_type,
            "source_file": case.image,
            "modality": modality,
        }


def _extra(result) -> np.ndarray:
  """The volume's further channels, (x, y, z, E); E = 0 for a single modality."""
  if result.extra is None:
    return np.zeros((*result.image.shape, 0), np.float32)
  return result.extra
