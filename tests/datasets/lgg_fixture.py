"""A tiny Kaggle LGG layout (tif slices and masks), and the lgg dataset built from it cheaply.

Shared by the builder's tests and by the tests that need a dataset whose validation patients
carry lesion labels (the lesion-free training protocol, the labelled-validation threshold).
"""

import pathlib

import numpy as np
from PIL import Image

from brainseg_jax import config as config_lib
from brainseg_jax.datasets import input_pipeline, lgg

SIZE, SLICES = 64, 12
# Ids whose salted hash lands in each split (pinned: a changed split rule fails here).
TRAIN, TEST, VALIDATION = "TCGA_AA_0001", "TCGA_AA_0003", "TCGA_AA_0007"
LESION_SLICES = range(4, 8)  # 0-based: slice numbers 5..8


def _head(k: int) -> np.ndarray:
  """Slice k (0 = bottom) of an ellipsoid head: full size up to slice 4, a cap above."""
  scale = np.sqrt(max(0.0, 1 - ((k - 4) / 8.0) ** 2)) if k > 4 else 1.0
  rows, cols = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
  return (cols / (0.35 * SIZE * scale)) ** 2 + (rows / (0.42 * SIZE * scale)) ** 2 <= 1


def write_patient(root: pathlib.Path, patient: str, t1_is_flair: bool = False,
                   slices: int = SLICES) -> pathlib.Path:
  """One patient folder; FLAIR intensity 100 + 5 n inside the head of slice number n, + 80 in
  the tumour."""
  folder = root / f"{patient}_20000101"
  folder.mkdir(parents=True)
  for k in range(slices):
    n = k + 1
    head = _head(k)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    if k in LESION_SLICES:
      mask[28:36, 28:36] = 255
    flair = (np.where(head, 100 + 5 * n, 0) + np.where(mask > 0, 80, 0)).astype(np.uint8)
    t1 = flair if t1_is_flair else np.where(head, 60 + 2 * n, 0).astype(np.uint8)
    t1c = np.where(head, 80 + 3 * n, 0).astype(np.uint8)
    Image.fromarray(np.stack([t1, flair, t1c], -1)).save(folder / f"{folder.name}_{n}.tif")
    Image.fromarray(mask).save(folder / f"{folder.name}_{n}_mask.tif")
  return folder


def write_kaggle_dir(root: pathlib.Path) -> pathlib.Path:
  """One train, one test and one validation patient (whose T1 channel repeats FLAIR)."""
  write_patient(root, TRAIN)
  write_patient(root, TEST)
  write_patient(root, VALIDATION, t1_is_flair=True)
  return root


# No resampling, N4 or registration: the fixture is already on a simple grid, and the build
# takes seconds.
CHEAP_PREP = {"brain_mask": "template", "resample": False, "n4": False, "registration": "none"}


def build(tmp_path: pathlib.Path, monkeypatch, resolution: int = 32, modalities=()):
  """(dataset config, builder) of the lgg dataset built from a fresh fixture under tmp_path."""
  kaggle_dir = write_kaggle_dir(tmp_path / "kaggle_3m")
  monkeypatch.setattr(lgg.Lgg, "PREP_OVERRIDES", CHEAP_PREP)
  monkeypatch.setenv("BRAINSEG_PREP_WORKERS", "1")
  config = config_lib.defaults().dataset
  config.name, config.modality, config.resolution = "lgg", "flair", resolution
  config.data_dir, config.manual_dir = str(tmp_path / "tfds"), str(kaggle_dir)
  config.modalities = tuple(modalities)
  return config, input_pipeline.get_builder(config)
