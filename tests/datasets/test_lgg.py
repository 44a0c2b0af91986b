"""`lgg`: tif slices restacked in number order, FLAIR copies refused, masks kept, patient splits.

A tiny fixture of the Kaggle layout (three patients of 12 slices, 64 x 64, a head-like ellipsoid
narrowing to its top) is written with PIL; the build test runs the real builder on it with a
cheap PrepConfig (no resampling, N4 or registration). Tests on the real download
(BRAINSEG_LGG_DIR, default ../data_lgg/kaggle_3m) and on the reference heads (../shared/data) skip
when those are absent; one patient is in both the download and the TCGA sample, and must land
on the same place of the template grid from either.
"""

import collections
import csv
import dataclasses
import json
import logging
import os
import pathlib

import nibabel as nib
import numpy as np
import pytest

from brainseg_jax.datasets import input_pipeline, lgg
from data_prep import cache, kaggle_lgg, pipeline, qc, runner
from data_prep.config import PrepConfig
from data_prep.errors import InputFileError
from tests.datasets.lgg_fixture import (
  LESION_SLICES,
  SIZE,
  SLICES,
  TEST,
  TRAIN,
  VALIDATION,
  build,
  write_kaggle_dir,
  write_patient,
)

pytestmark = pytest.mark.slow  # builds the LGG fixture dataset


@pytest.fixture
def kaggle_dir(tmp_path) -> pathlib.Path:
  return write_kaggle_dir(tmp_path / "kaggle_3m")


def test_slices_stack_in_number_order(kaggle_dir, tmp_path):
  folder = kaggle_dir / f"{TRAIN}_20000101"
  names = [os.path.basename(image) for image, _ in kaggle_lgg.slice_files(str(folder))]
  assert names[8:11] == [f"{folder.name}_{n}.tif" for n in (9, 10, 11)]
  manifest = kaggle_lgg.restack(str(folder), str(tmp_path / "volumes"))
  assert manifest["slices"] == SLICES and manifest["missing"] == []
  flair = nib.load(kaggle_lgg.stack_paths(str(tmp_path / "volumes"), folder.name)["flair"])
  data = np.asarray(flair.dataobj)
  tissue_per_slice = [np.median(data[..., k][data[..., k] > 0]) for k in range(SLICES)]
  assert tissue_per_slice == [100 + 5 * n for n in range(1, SLICES + 1)]


def test_stack_geometry_is_ras_with_rows_anterior_and_slice_one_inferior(kaggle_dir, tmp_path):
  folder = kaggle_dir / f"{TRAIN}_20000101"
  kaggle_lgg.restack(str(folder), str(tmp_path / "volumes"))
  img = nib.load(kaggle_lgg.stack_paths(str(tmp_path / "volumes"), folder.name)["flair"])
  assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
  world = lambda voxel: img.affine @ [*voxel, 1]
  # Column 0 is the patient's right (+x), row 0 anterior (+y), slice 1 inferior (-z).
  assert world((0, 0, 0))[0] > world((SIZE - 1, 0, 0))[0]
  assert world((0, 0, 0))[1] > world((0, SIZE - 1, 0))[1]
  assert world((0, 0, 0))[2] < world((0, 0, SLICES - 1))[2]
  zooms = img.header.get_zooms()
  assert zooms[0] == pytest.approx(zooms[1]) and 1.0 < zooms[2] < 15.0


def test_a_channel_repeating_flair_is_missing_data(kaggle_dir, tmp_path, caplog):
  volumes = str(tmp_path / "volumes")
  with caplog.at_level(logging.WARNING):
    t1_cases = lgg.find_lgg(str(kaggle_dir), "t1", volumes)
  assert sorted(c.subject_id for c in t1_cases) == [f"{TRAIN}_20000101", f"{TEST}_20000101"]
  assert f"{VALIDATION}_20000101 for t1: its t1 channel only repeats FLAIR" in caplog.text
  paths = kaggle_lgg.stack_paths(volumes, f"{VALIDATION}_20000101")
  assert not os.path.exists(paths["t1"])  # the FLAIR copy is never written as T1
  assert json.loads(pathlib.Path(paths["manifest"]).read_text())["missing"] == ["t1"]
  flair_cases = lgg.find_lgg(str(kaggle_dir), "flair", volumes)
  assert len(flair_cases) == 3 and all(c.image.endswith("_flair.nii.gz") for c in flair_cases)


def test_masks_are_the_anomaly_masks(kaggle_dir, tmp_path):
  volumes = str(tmp_path / "volumes")
  cases = {c.subject_id: c for c in lgg.find_lgg(str(kaggle_dir), "flair", volumes)}
  case = cases[f"{TEST}_20000101"]
  assert case.anomaly_type == "glioma" and case.anomaly_mask.endswith("_mask.nii.gz")
  mask = np.asarray(nib.load(case.anomaly_mask).dataobj)
  assert set(np.unique(mask)) == {0, 1}
  assert np.flatnonzero(mask.any(axis=(0, 1))).tolist() == list(LESION_SLICES)
  assert mask.sum() == 8 * 8 * len(LESION_SLICES)


def test_splits_by_patient_are_fixed():
  assert [lgg.split_of(p) for p in (TRAIN, TEST, VALIDATION)] == ["train", "test", "validation"]
  assert lgg.patient_id("TCGA_CS_4941_19960909") == "TCGA_CS_4941"
  assert lgg.split_of("TCGA_CS_4941") == "test" and lgg.split_of("TCGA_HT_A61B") == "train"
  assert lgg.patient_id("odd_folder") == "odd_folder"


def test_a_subset_keeps_its_splits(kaggle_dir, tmp_path):
  volumes = str(tmp_path / "volumes")
  full = {c.subject_id: c.split for c in lgg.find_lgg(str(kaggle_dir), "flair", volumes)}
  subset_dir = tmp_path / "subset"
  subset_dir.mkdir()
  (subset_dir / f"{TEST}_20000101").symlink_to(kaggle_dir / f"{TEST}_20000101")
  subset = {c.subject_id: c.split for c in lgg.find_lgg(str(subset_dir), "flair", volumes)}
  assert subset == {f"{TEST}_20000101": full[f"{TEST}_20000101"]}
  assert all(c.exclude_anomaly_from_brain == (c.split != "test")
             for c in lgg.find_lgg(str(kaggle_dir), "flair", volumes))


def test_unusable_patients_are_skipped_with_the_file_named(kaggle_dir, tmp_path, caplog):
  gap = write_patient(kaggle_dir, "TCGA_AA_0010")
  (gap / f"{gap.name}_5.tif").unlink()
  broken = write_patient(kaggle_dir, "TCGA_AA_0011")
  (broken / f"{broken.name}_3.tif").write_bytes(b"not a tif")
  topless = write_patient(kaggle_dir, "TCGA_AA_0012", slices=6)  # stops below the cap
  with caplog.at_level(logging.WARNING):
    cases = lgg.find_lgg(str(kaggle_dir), "flair", str(tmp_path / "volumes"))
  assert len(cases) == 3
  assert f"{gap.name}: slice numbers 1..12 miss [5]" in caplog.text
  assert f"{broken.name}_3.tif: not a readable tif" in caplog.text
  assert f"{topless.name}: the top slice already covers" in caplog.text
  with pytest.raises(InputFileError, match="no slices named"):
    kaggle_lgg.slice_files(str(tmp_path))


def test_a_second_copy_of_the_download_is_ignored(kaggle_dir, tmp_path, caplog):
  copy = tmp_path / "lgg-mri-segmentation" / "kaggle_3m"
  write_patient(copy, TRAIN)
  with caplog.at_level(logging.WARNING):
    folders = kaggle_lgg.patient_folders(str(tmp_path))
  assert len(folders) == 3 and f"a second copy of {kaggle_dir}" in caplog.text


def test_builds_into_the_slice_schema_with_patient_splits(tmp_path, monkeypatch):
  _, builder = build(tmp_path, monkeypatch)
  assert set(builder.info.splits) == {"train", "validation", "test"}
  seen = collections.defaultdict(set)
  for split in ("train", "validation", "test"):
    for v in input_pipeline.load_volumes(builder, split):
      seen[v.subject_id].add(split)
      assert v.anomaly_type == "glioma" and v.anomaly_mask.any()
      assert v.image.shape == (24, 32, 32, 1)
      overlap = (v.anomaly_mask & v.brain_mask).any()
      assert overlap == (split == "test")  # train/validation brains leave the tumour out
  assert seen == {f"{TRAIN}_20000101": {"train"}, f"{TEST}_20000101": {"test"},
                  f"{VALIDATION}_20000101": {"validation"}}
  example = builder.as_data_source(split="test")[0]
  assert example["source_file"].decode().endswith(f"{TEST}_20000101_flair.nii.gz")


# ---- real data, when present --------------------------------------------------------------------

@pytest.fixture(scope="module")
def lgg_dir() -> pathlib.Path:
  default_dir = pathlib.Path(__file__).resolve().parents[3] / "data_lgg" / "kaggle_3m"
  path = pathlib.Path(os.environ.get("BRAINSEG_LGG_DIR", default_dir))
  if not path.is_dir():
    pytest.skip(f"LGG download not found at {path} (set BRAINSEG_LGG_DIR)")
  return path


def test_real_splits_and_laterality(lgg_dir):
  """58/11/41 patients; tumours data.csv calls left (1) lie in the image's right half."""
  folders = kaggle_lgg.patient_folders(str(lgg_dir))
  assert len(folders) == 110
  counts = collections.Counter(lgg.split_of(lgg.patient_id(os.path.basename(f)))
                               for f in folders)
  assert counts == {"train": 58, "validation": 11, "test": 41}
  with open(lgg_dir / "data.csv") as f:
    laterality = {row["Patient"]: row["laterality"] for row in csv.DictReader(f)}
  agree = disagree = 0
  for folder in folders:
    side = laterality.get(lgg.patient_id(os.path.basename(folder)))
    if side not in ("1", "3"):
      continue
    _, masks = kaggle_lgg.read_stack(kaggle_lgg.slice_files(folder))
    image_right = np.argwhere(masks)[:, 2].mean() > masks.shape[2] / 2
    agree += image_right == (side == "1")
    disagree += image_right != (side == "1")
  assert agree >= 100 and disagree <= 2


def test_reference_head_geometry_matches_real_heads(sample_data_dir):
  """The reference constants re-measured on the elderly FLAIR heads, and the estimate's error on
  them cut into 6 mm slices."""
  widths, heights, errors = [], [], []
  for path in sorted((sample_data_dir / "elderly_flair" / "flair").glob("*_FL.nii.gz")):
    img = nib.as_closest_canonical(nib.load(path))
    volume = img.get_fdata(dtype=np.float32)
    sx, _, sz = (float(z) for z in img.header.get_zooms()[:3])
    areas, w = kaggle_lgg.head_profile(volume)
    level = kaggle_lgg.level_from_top(areas, 0.8)
    widths.append(w[volume.shape[2] - 1 - int(round(level))] * sx)
    top = kaggle_lgg.level_from_top(areas, 0.3)
    if top is not None:
      heights.append((level - top) * sz)
    n = volume.shape[2] // 3
    thick = volume[:, :, -3 * n:].reshape(*volume.shape[:2], n, 3).mean(-1)
    errors.append(kaggle_lgg.estimate_spacing(thick, str(path)).slice_mm / (3 * sz) - 1)
  assert np.mean(widths) == pytest.approx(kaggle_lgg.REFERENCE_WIDTH_MM, rel=0.05)
  assert np.mean(heights) == pytest.approx(kaggle_lgg.REFERENCE_HEIGHTS_MM[0.3], rel=0.08)
  assert np.sqrt(np.mean(np.square(errors))) < 0.2


def test_a_patient_lands_where_its_tcga_sample_scan_does(lgg_dir, sample_data_dir, tmp_path):
  """TCGA-DU-7294 is both in the download (tifs, geometry estimated) and in ../shared/data (BraTS
  processing, 1 mm, known geometry): the tumours land on the same place of the template grid."""
  folder = lgg_dir / "TCGA_DU_7294_19890104"
  sample = sample_data_dir / "tcga_glioma" / "TCGA-DU-7294" / "TCGA-DU-7294"
  if not folder.is_dir() or not sample.parent.is_dir():
    pytest.skip("TCGA-DU-7294 not in both data sets")
  kaggle_lgg.restack(str(folder), str(tmp_path))
  paths = kaggle_lgg.stack_paths(str(tmp_path), folder.name)
  config = dataclasses.replace(PrepConfig(modality="flair", resolution=64),
                               **lgg.Lgg.PREP_OVERRIDES)
  ours = pipeline.preprocess(paths["flair"], config, paths["mask"]).anomaly_mask.astype(bool)
  theirs = pipeline.preprocess(f"{sample}_fla_bet_normalized.nii.gz", config,
                               f"{sample}_tumor_fusion_mav.nii.gz").anomaly_mask.astype(bool)
  # Manual FLAIR abnormality against an algorithmic whole-tumour fusion: 0.77 measured.
  assert 2 * (ours & theirs).sum() / (ours.sum() + theirs.sum()) > 0.65
  shift = np.argwhere(ours).mean(axis=0) - np.argwhere(theirs).mean(axis=0)
  assert np.abs(shift).max() < 1.5  # voxels of 3 mm; 0.6 measured


def test_volumes_failing_registration_qc_are_left_out_and_named(tmp_path, monkeypatch):
  """The QC stored with each cached volume decides; a flagged one moves to `skipped`."""
  _, builder = build(tmp_path, monkeypatch)
  work_dir = builder.prep_work_dir()
  summary = runner.RunSummary()
  for i, name in enumerate(sorted(os.listdir(work_dir))):
    path = os.path.join(work_dir, name)
    volume = cache.load(path)
    outside = 0.30 if i == 0 else 0.001  # the first registered "wrong"
    registration_qc = qc.RegistrationQC(volume_scale=0.8, brain_outside_head=outside,
                                        rim_dark_excess=0.0, tissue_around_brain=0.5,
                                        brain_coverage=1.0)
    cache.save(path, dataclasses.replace(volume, qc=registration_qc))
    summary.done[name[:-4]] = path
  builder.prep_summary = summary
  builder._leave_out_failed_registrations()
  assert len(summary.done) == 2 and len(summary.skipped) == 1
  (reason,) = summary.skipped.values()
  assert reason.startswith("registration QC failed: 30.0% of the template brain lies outside")


def test_several_modalities_become_aligned_channels(tmp_path, monkeypatch):
  """FLAIR, T1, T1c of a patient as one 3-channel image; a patient lacking one is left out."""
  config, builder = build(tmp_path, monkeypatch, modalities=("flair", "t1", "t1c"))
  assert builder.builder_config.name == "flair-t1-t1c_32"
  assert "validation" not in builder.info.splits  # its T1 only repeats FLAIR
  (volume,) = input_pipeline.load_volumes(builder, "test")
  assert volume.image.shape == (24, 32, 32, 3)
  brain = volume.brain_mask[..., 0]
  # Each channel normalised on its own; all zero outside the same brain.
  for c in range(3):
    assert volume.image[..., c][brain].max() > 0.5
    assert not volume.image[..., c][~brain].any()
  # Channel order: the fixture's tumour is bright on FLAIR only.
  tumour = volume.anomaly_mask[..., 0]
  contrast = [volume.image[..., c][tumour].mean() - volume.image[..., c][brain & ~tumour].mean()
              for c in range(3)]
  assert contrast[0] > 0.2 and abs(contrast[1]) < 0.1 and abs(contrast[2]) < 0.1, contrast
  single, _ = build(tmp_path / "single", monkeypatch)
  flair = input_pipeline.load_volumes(input_pipeline.get_builder(single), "test")[0].image
  np.testing.assert_allclose(volume.image[..., :1], flair, atol=1e-6)
