"""Reading the slice datasets: training batches and whole evaluation volumes.

Datasets are TFDS array_record files read through `as_data_source()`: random
access in numpy, no TensorFlow. Training batches come from a grain MapDataset,
which is indexable: batch i is a pure function of (seed, i). A resumed run
therefore continues from exactly the batch it stopped at.
"""

import dataclasses
import os
from collections.abc import Iterator

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from scipy import ndimage

from brainseg_jax import config as config_lib
from brainseg_jax.datasets import (
  brats,
  elderly_flair,
  ixi,
  lgg,
  mslub,
  nifti_folder,
  schema,
  synthetic_brain,
)
from brainseg_jax.errors import UserError
from data_prep import standardize

# Dataset name (config.dataset.name) -> TFDS builder class.
BUILDERS = {
    "synthetic_brain": synthetic_brain.SyntheticBrain,
    "ixi": ixi.Ixi,
    "brats_glioma": brats.BratsGlioma,
    "mslub": mslub.Mslub,
    "elderly_flair": elderly_flair.ElderlyFlair,
    "nifti_folder": nifti_folder.NiftiFolder,
    "lgg": lgg.Lgg,
}


def data_dir(dataset_config: ml_collections.ConfigDict) -> str:
  """Where TFDS datasets live: the config, else $BRAINSEG_DATA_DIR, else TFDS's default."""
  path = dataset_config.data_dir or os.environ.get("BRAINSEG_DATA_DIR", "")
  return os.path.expanduser(path) if path else tfds.core.constants.DATA_DIR


def get_builder(dataset_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder named by the config, prepared (built on first use)."""
  builder = make_builder(dataset_config)
  if not builder.is_prepared():
    download_config = _download_config(builder, dataset_config)
    # Only one process writes; TFDS writes into a temporary folder and renames
    # it into place, so an interrupted build leaves no half-written dataset.
    if jax.process_index() == 0:
      builder.download_and_prepare(download_config=download_config)
    _wait_for_other_processes("dataset_prepared")
    if jax.process_index() != 0:  # re-read what process 0 wrote
      builder = make_builder(dataset_config)
  return builder


def make_builder(dataset_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder named by the config, as it is (not prepared)."""
  if dataset_config.name not in BUILDERS:
    raise UserError(f"unknown dataset.name {dataset_config.name!r}: "
                    f"expected one of {sorted(BUILDERS)}")
  builder_cls = BUILDERS[dataset_config.name]
  config_name = schema.variant_name(config_lib.modalities(dataset_config),
                                    dataset_config.resolution)
  known = [c.name for c in builder_cls.BUILDER_CONFIGS]
  if config_name not in known:
    raise UserError(f"dataset {dataset_config.name} has no variant {config_name!r} "
                    f"(modalities x resolution): expected one of {known}")
  return builder_cls(config=config_name, data_dir=data_dir(dataset_config),
                     file_format="array_record")


def split_source(builder: tfds.core.DatasetBuilder, split: str):
  """The random-access source of one split; a split the build left empty is a one-line error.

  A split is empty when every subject hashed into it was left out (registration
  QC, a missing mask): without this check TFDS stops deep inside with "Unknown
  split".
  """
  if split not in builder.info.splits:
    raise UserError(f"dataset {builder.name}/{builder.builder_config.name} in {builder.data_dir} "
                    f"has no {split!r} split (it has {', '.join(sorted(builder.info.splits))}): "
                    "every subject of that split was left out at build time; the build log and "
                    "its qc_*.csv say why")
  return builder.as_data_source(split=split)


def manual_dir(builder, dataset_config) -> str:
  """The config's manual download folder, checked to exist before a long build."""
  return _download_config(builder, dataset_config).manual_dir


def _download_config(builder, dataset_config) -> tfds.download.DownloadConfig | None:
  """The manual download folder of datasets that need one, checked before a long build."""
  instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  manual_dir = os.path.expanduser(dataset_config.manual_dir)
  if not instructions:
    return tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  if not manual_dir or not os.path.isdir(manual_dir):
    where = f"{manual_dir} not found" if manual_dir else "config.dataset.manual_dir is not set"
    raise UserError(f"dataset {dataset_config.name} needs its files in a manual_dir: {where}. "
                    f"{' '.join(instructions.split())}")
  return tfds.download.DownloadConfig(manual_dir=manual_dir)


def _wait_for_other_processes(name: str):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def healthy_training_image(example) -> np.ndarray:
  """The slice's image with any annotated anomaly painted over by the tissue around it.

  Models must learn healthy anatomy only. Healthy datasets have empty anomaly
  masks and pass unchanged. Where every subject carries lesions (the elderly
  FLAIR scans) the train split keeps their masks, and each lesion voxel here
  takes the median of the normal-appearing brain voxels in a 2-voxel ring
  around the lesions: no model (f-AnoGAN's critic included) sees a lesion.
  """
  image = example["image"]
  lesion = example["anomaly_mask"][..., 0].astype(bool)
  if not lesion.any():
    return image
  healthy_brain = example["brain_mask"][..., 0].astype(bool) & ~lesion
  ring = ndimage.binary_dilation(lesion, iterations=2) & healthy_brain
  around = ring if ring.any() else healthy_brain
  # One fill per channel (modality).
  fill = (np.median(image[around], axis=0) if around.any()
          else np.zeros(image.shape[-1])).astype(np.float32)
  return np.where(lesion[..., None], fill, image)


def training_example(example) -> dict[str, np.ndarray]:
  """What a train step sees of a slice: its healthy image and its brain mask (bool).

  The brain mask lets a model restrict its corruption or its loss to the brain
  (the denoising U-Net adds noise and counts errors there only).
  """
  return {"image": healthy_training_image(example),
          "brain_mask": example["brain_mask"].astype(bool)}


# config.dataset.train_slices: which slices of the training split a model learns from.
TRAIN_SLICES = {
    "all": "every slice of the training subjects, annotated anomalies painted over",
    "lesion_free": "only the slices of the training subjects with no annotated anomaly within "
                   "dataset.lesion_margin_slices slices (lesion-free slices of patient scans)",
}


def lesion_free(slice_has_lesion: np.ndarray, margin: int) -> np.ndarray:
  """Which slices of one volume (bool (S,), in slice order) are `margin` slices from any lesion.

  Lesion edges are fuzzier than their masks and slices are thick, so the
  slices next to a lesion are not trusted as healthy either.
  """
  near = ndimage.binary_dilation(slice_has_lesion, iterations=margin) if margin > 0 else (
      slice_has_lesion)
  return ~np.asarray(near, bool)


@dataclasses.dataclass(frozen=True)
class SlicePositions:
  """Where each example of a data source sits in its volume, read in one pass.

  What the training protocols need of every example (`training_indices`, the
  2.5D neighbours of `_WithContext`) without decoding the whole split once each.
  """

  subject_id: list[str]
  slice_index: np.ndarray  # (N,) int: the slice's position in its volume
  has_lesion: np.ndarray  # (N,) bool: the slice's anomaly mask has a voxel

  @classmethod
  def read(cls, source) -> "SlicePositions":
    subjects, slice_index, has_lesion = [], [], []
    for index in range(len(source)):
      example = source[index]
      subjects.append(_text(example["subject_id"]))
      slice_index.append(int(example["slice_index"]))
      has_lesion.append(bool(example["anomaly_mask"].any()))
    return cls(subjects, np.array(slice_index, np.int64), np.array(has_lesion, bool))


def training_indices(positions: SlicePositions, dataset_config) -> np.ndarray:
  """Indices of the examples (at `positions`) that the `train_slices` protocol trains on."""
  protocol = dataset_config.train_slices
  if protocol not in TRAIN_SLICES:
    raise UserError(f"dataset.train_slices must be one of {sorted(TRAIN_SLICES)}, "
                    f"got {protocol!r}")
  if protocol == "all":
    return np.arange(len(positions.subject_id))
  by_subject: dict[str, list[int]] = {}
  for index, subject in enumerate(positions.subject_id):
    by_subject.setdefault(subject, []).append(index)
  keep = []
  for indices in by_subject.values():
    indices = np.array(indices)[np.argsort(positions.slice_index[indices])]
    clean = lesion_free(positions.has_lesion[indices], dataset_config.lesion_margin_slices)
    keep += indices[clean].tolist()
  return np.array(sorted(keep), dtype=np.int64)


class _Subset:
  """The examples of a data source at `indices`, as a data source."""

  def __init__(self, source, indices: np.ndarray):
    self._source, self._indices = source, indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int):
    return self._source[int(self._indices[index])]


class _Prepared:
  """The examples of a data source, each passed through `prepare`, as a data source."""

  def __init__(self, source, prepare):
    self._source, self._prepare = source, prepare

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int):
    return self._prepare(self._source[index])


class _WithContext:
  """Each prepared slice with its `context` neighbours on each side, stacked as channels.

  2.5D input: "image" and "brain_mask" become (H, W, C * (2 * context + 1)),
  slice-major, the slice itself in the middle block; each neighbour keeps its
  own brain mask (a model adds noise and counts errors in each slice's brain).
  A neighbour beyond the end of the volume repeats the end slice, as
  `context_stack` does for whole volumes.
  """

  def __init__(self, source, prepare, context: int, positions: SlicePositions):
    self._source, self._prepare, self._context = source, prepare, context
    self._index = {(subject, int(k)): i for i, (subject, k) in
                   enumerate(zip(positions.subject_id, positions.slice_index, strict=True))}

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int):
    centre = self._source[index]
    subject, position = _text(centre["subject_id"]), int(centre["slice_index"])
    last = int(centre["num_slices"]) - 1
    stack = [self._prepare(centre if offset == 0 else
                           self._source[self._index[subject, min(max(position + offset, 0),
                                                                 last)]])
             for offset in range(-self._context, self._context + 1)]
    return {key: np.concatenate([s[key] for s in stack], axis=-1) for key in stack[0]}


class _Concatenated:
  """Several data sources one after the other, as one data source."""

  def __init__(self, sources):
    self._sources = list(sources)
    self._starts = np.cumsum([0] + [len(s) for s in self._sources])

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, index: int):
    which = int(np.searchsorted(self._starts, index, side="right")) - 1
    return self._sources[which][index - int(self._starts[which])]


def context_stack(volume: np.ndarray, context: int) -> np.ndarray:
  """(S, H, W, C) slices -> (S, H, W, C * (2 * context + 1)): each with its neighbours.

  The whole-volume form of the 2.5D input the model trained on (`_WithContext`):
  slice-major channels, the end slices repeated beyond the volume.
  """
  if context == 0:
    return volume
  last = len(volume) - 1
  positions = np.arange(len(volume))
  return np.concatenate([volume[np.clip(positions + offset, 0, last)]
                         for offset in range(-context, context + 1)], axis=-1)


def subject_brain_values(source, healthy_only: bool) -> dict[str, np.ndarray]:
  """Each subject's brain intensities over all its slices (labelled lesions left out if asked)."""
  values: dict[str, list[np.ndarray]] = {}
  for index in range(len(source)):
    example = source[index]
    brain = example["brain_mask"][..., 0].astype(bool)
    if healthy_only:
      brain &= ~example["anomaly_mask"][..., 0].astype(bool)
    values.setdefault(_text(example["subject_id"]), []).append(example["image"][..., 0][brain])
  return {subject: np.concatenate(v) for subject, v in values.items()}


def fit_standard_scale(builder, split: str = "train") -> standardize.StandardScale:
  """The Nyúl standard scale of the training subjects' healthy brain voxels."""
  brains = subject_brain_values(split_source(builder, split), healthy_only=True)
  return standardize.fit([v for v in brains.values() if v.size])


def _process_share(global_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """This process's consecutive part of every array of a global batch."""
  local = len(global_batch["image"]) // jax.process_count()
  start = jax.process_index() * local
  return {key: value[start:start + local] for key, value in global_batch.items()}


def train_batches(builder, batch_size: int, seed: int, start_step: int = 0,
                  split: str = "train", dataset_config=None,
                  standard: standardize.StandardScale | None = None, pooled=(),
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Endless shuffled batches of `training_slices`, starting at batch `start_step`.

  A batch is a dict: "image" (B, H, W, C) float32 and "brain_mask" (B, H, W, C)
  bool (C = 1 for one modality in 2D). Each process reads its own
  1/process_count of every batch (`batch_size` is global), so a multi-host run
  assembles one global batch per step.
  """
  source = training_slices(builder, split, dataset_config, standard, pooled)
  dataset = (grain.MapDataset.source(source)
             .seed(seed)
             .shuffle()
             .repeat(None)
             .batch(batch_size, drop_remainder=True)
             .map(_process_share))
  dataset = dataset.slice(slice(start_step, None))
  return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))


def training_slices(builder, split: str = "train", dataset_config=None,
                    standard: standardize.StandardScale | None = None, pooled=()):
  """The training examples of a split (and of the `pooled` datasets), as one data source.

  With a `dataset_config`, its `train_slices` protocol picks the slices and its
  `context_slices` stacks each slice's neighbours; with a `standard` scale,
  images are standardised (data_prep/standardize.py). `pooled`: builders of
  further datasets whose every split joins, by the same protocol.
  """
  groups = [(builder, [training_source(split_source(builder, split), dataset_config,
                                      standard)])]
  groups += [(other, [training_source(split_source(other, name), dataset_config)
                      for name in other.info.splits]) for other in pooled]
  counts = [sum(len(s) for s in sources) for _, sources in groups]
  for (source_builder, _), count in zip(groups, counts, strict=True):
    if not count:
      margin = "" if dataset_config is None else (
          f" ({dataset_config.train_slices}, margin {dataset_config.lesion_margin_slices})")
      raise UserError(f"dataset {source_builder.name}: no training slices{margin}")
  if pooled:
    logging.info("training slices: %s", ", ".join(
        f"{b.name} {n}" for (b, _), n in zip(groups, counts, strict=True)))
  sources = [source for _, group in groups for source in group]
  return sources[0] if len(sources) == 1 else _Concatenated(sources)


def training_source(source, dataset_config=None,
                    standard: standardize.StandardScale | None = None):
  """The training examples (`training_example`) a split's data source gives, as a data source."""
  prepare = training_example
  if standard is not None:  # each slice by its subject's landmarks, as whole volumes are
    marks = {subject: standardize.landmarks(values, standard.percentiles)
             for subject, values in subject_brain_values(source, healthy_only=False).items()}

    def prepare(example):
      image = standardize.apply(example["image"], example["brain_mask"].astype(bool), standard,
                                marks[_text(example["subject_id"])])
      return training_example({**example, "image": image})

  context = 0 if dataset_config is None else dataset_config.context_slices
  every_slice = dataset_config is None or dataset_config.train_slices == "all"
  if not context and every_slice:
    return _Prepared(source, prepare)
  positions = SlicePositions.read(source)
  examples = (_WithContext(source, prepare, context, positions) if context
              else _Prepared(source, prepare))
  if every_slice:
    return examples
  return _Subset(examples, training_indices(positions, dataset_config))


@dataclasses.dataclass(frozen=True)
class Volume:
  """All axial slices of one subject, in slice order; arrays are (S, H, W, 1)."""

  subject_id: str
  anomaly_type: str
  image: np.ndarray
  brain_mask: np.ndarray
  anomaly_mask: np.ndarray


def load_volumes(builder, split: str,
                 standard: standardize.StandardScale | None = None) -> list[Volume]:
  """Every subject of a split, reassembled from its slices (and standardised, if asked)."""
  source = split_source(builder, split)
  examples = source.__getitems__(list(range(len(source))))
  by_subject: dict[str, list[dict]] = {}
  for example in examples:
    by_subject.setdefault(_text(example["subject_id"]), []).append(example)
  volumes = []
  for subject_id in sorted(by_subject):
    slices = sorted(by_subject[subject_id], key=lambda e: int(e["slice_index"]))
    expected = int(slices[0]["num_slices"])
    if len(slices) != expected:
      raise UserError(f"split {split!r} of {builder.name}: subject {subject_id} has "
                      f"{len(slices)} of its {expected} slices")
    image = np.stack([s["image"] for s in slices])
    brain = np.stack([s["brain_mask"] for s in slices]).astype(bool)
    if standard is not None:
      image = standardize.apply(image, brain, standard)
    volumes.append(Volume(
        subject_id=subject_id,
        anomaly_type=_text(slices[0]["anomaly_type"]),
        image=image,
        brain_mask=brain,
        anomaly_mask=np.stack([s["anomaly_mask"] for s in slices]).astype(bool),
    ))
  return volumes


def to_original_grid(builder, subject_id: str, volume: np.ndarray):
  """A (slices, H, W) array of a subject as a NIfTI image on that subject's original grid."""
  if not hasattr(builder, "to_original_grid"):
    raise UserError(f"dataset {builder.name} cannot map volumes back to their original grid; "
                    "set eval.write_nifti=False")
  return builder.to_original_grid(subject_id, volume)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)
