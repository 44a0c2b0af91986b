"""Real-scan builders: layouts found, splits by subject, manual_dir errors, a real build."""

import logging

import nibabel as nib
import numpy as np
import pytest

from brainseg_jax import config as config_lib
from brainseg_jax.datasets import brats, elderly_flair, input_pipeline, ixi, mslub, nifti_folder
from brainseg_jax.errors import UserError
from data_prep import runner
from data_prep.cases import Case
from data_prep.config import PrepConfig

pytestmark = pytest.mark.slow  # builds datasets from real scans


def _dataset_config(name, modality, resolution, data_dir, manual_dir):
  config = config_lib.defaults().dataset
  config.name, config.modality, config.resolution = name, modality, resolution
  config.data_dir, config.manual_dir = data_dir, manual_dir
  return config


def test_ixi_layout_and_healthy_subject_splits(sample_data_dir):
  cases = ixi.find_ixi(str(sample_data_dir / "ixi_t1"), "t1")
  assert len(cases) == 184
  assert all(c.subject_id.startswith("IXI") and c.anomaly_type == "none" for c in cases)
  assert {c.split for c in cases} == {"train", "validation"}
  share = sum(c.split == "validation" for c in cases) / len(cases)
  assert 0.07 < share < 0.25
  assert not ixi.find_ixi(str(sample_data_dir / "ixi_t1"), "t2")


def test_brats_and_tcga_layouts(sample_data_dir, tmp_path):
  cases = brats.find_brats(str(sample_data_dir / "tcga_glioma"), "t1c")
  assert sorted(c.subject_id for c in cases) == ["OtherEXampleFromTCIA", "TCGA-DU-7294"]
  assert all(c.image.endswith("_t1c_bet_normalized.nii.gz") and c.split == "test"
             for c in cases)
  for subject, files in (("BraTS20_Training_001", ["_t1", "_t1ce", "_seg"]),
                         ("BraTS-GLI-00000-000", ["-t1n", "-t1c", "-seg"])):
    (tmp_path / subject).mkdir()
    for suffix in files:
      (tmp_path / subject / f"{subject}{suffix}.nii.gz").touch()
  found = {c.subject_id: c for c in brats.find_brats(str(tmp_path), "t1c")}
  assert found["BraTS20_Training_001"].image.endswith("_t1ce.nii.gz")
  assert found["BraTS-GLI-00000-000"].anomaly_mask.endswith("-seg.nii.gz")


def test_elderly_splits_by_subject_and_excludes_lesions_from_training_brains(sample_data_dir):
  cases = elderly_flair.find_elderly(str(sample_data_dir / "elderly_flair"), "flair")
  assert len(cases) == 23 and all(c.anomaly_mask for c in cases)
  splits = {c.split for c in cases}
  assert splits == {"train", "validation", "test"}
  assert all(c.exclude_anomaly_from_brain == (c.split != "test") for c in cases)


def test_folder_layout_matches_masks_by_name(tmp_path, caplog):
  for folder, names in (("images", ["a", "b"]), ("lesion_masks", ["b", "zz"])):
    (tmp_path / folder).mkdir()
    for name in names:
      (tmp_path / folder / f"{name}.nii.gz").touch()
  with caplog.at_level(logging.WARNING):
    cases = {c.subject_id: c for c in nifti_folder.find_folder(str(tmp_path), "t1")}
  assert cases["b"].split == "test" and cases["b"].anomaly_mask.endswith("b.nii.gz")
  assert cases["a"].split in ("train", "validation") and cases["a"].anomaly_mask is None
  assert "zz.nii.gz matches no image" in caplog.text


def test_mslub_layout_uses_consensus_and_brain_masks(tmp_path):
  for patient, files in (("patient01", ["FLAIR", "T1W", "consensus_gt", "brainmask"]),
                         ("patient02", ["FLAIR", "consensus_gt"]),
                         ("patient03", ["FLAIR"])):
    (tmp_path / "preprocessed" / patient).mkdir(parents=True)
    for name in files:
      (tmp_path / "preprocessed" / patient / f"{name}.nii.gz").touch()
  cases = {c.subject_id: c for c in mslub.find_mslub(str(tmp_path), "flair")}
  assert sorted(cases) == ["patient01", "patient02"]
  assert cases["patient01"].brain_mask.endswith("brainmask.nii.gz")
  assert cases["patient02"].brain_mask is None
  assert all(c.split == "test" and c.anomaly_type == "ms" for c in cases.values())
  assert [c.subject_id for c in mslub.find_mslub(str(tmp_path), "t1")] == ["patient01"]


def test_missing_manual_dir_names_the_dataset_and_layout(tmp_path):
  config = _dataset_config("ixi", "t1", 32, str(tmp_path), "")
  with pytest.raises(UserError, match="dataset ixi needs its files.*IXI-T1"):
    input_pipeline.get_builder(config)
  config.manual_dir = str(tmp_path / "nope")
  with pytest.raises(UserError, match="nope not found"):
    input_pipeline.get_builder(config)


def test_runner_skips_bad_files_and_resumes(tmp_path):
  shape = (20, 24, 18)
  brain = np.zeros(shape, np.float32)
  brain[4:16, 4:20, 3:15] = 1
  affine = np.diag([6.0, 6.0, 6.0, 1.0])
  affine[:3, 3] = [-60, -80, -40]
  cases = []
  for name in ("s1", "s2"):
    nib.save(nib.Nifti1Image(brain * 2 + 0.1, affine), str(tmp_path / f"{name}.nii.gz"))
    cases.append(Case(name, str(tmp_path / f"{name}.nii.gz"), "train",
                      brain_mask=str(tmp_path / "brain.nii.gz")))
  nib.save(nib.Nifti1Image(brain, affine), str(tmp_path / "brain.nii.gz"))
  (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b broken")
  cases.append(Case("bad", str(tmp_path / "bad.nii.gz"), "train"))
  config = PrepConfig(resolution=32, resample=False, n4=False, registration="none")
  work = str(tmp_path / "work")
  first = runner.run(cases, config, work, workers=2)
  assert sorted(first.done) == ["s1", "s2"] and first.cached == 0
  assert list(first.skipped) == ["bad"] and "bad.nii.gz" in first.skipped["bad"]
  second = runner.run(cases[:2], config, work, workers=2)
  assert second.cached == 2 and not second.skipped


def test_tcga_builds_into_the_slice_schema(sample_data_dir, data_dir):
  config = _dataset_config("brats_glioma", "flair", 32, data_dir,
                           str(sample_data_dir / "tcga_glioma"))
  builder = input_pipeline.get_builder(config)
  assert set(builder.info.splits) == {"test"}
  volumes = input_pipeline.load_volumes(builder, "test")
  assert [v.subject_id for v in volumes] == ["OtherEXampleFromTCIA", "TCGA-DU-7294"]
  for v in volumes:
    assert v.image.shape == (24, 32, 32, 1) and v.anomaly_type == "glioma"
    assert v.anomaly_mask.any() and not (v.anomaly_mask & ~v.brain_mask).any()
    assert v.image[~v.brain_mask].max() == 0
  # Evaluation writes its maps on each scan's own grid through the build's records.
  truth_file = sample_data_dir / "tcga_glioma" / "TCGA-DU-7294" / \
      "TCGA-DU-7294_tumor_fusion_mav.nii.gz"
  truth = nib.load(truth_file)
  back = input_pipeline.to_original_grid(builder, "TCGA-DU-7294",
                                         volumes[1].anomaly_mask.astype(np.uint8))
  assert back.shape == truth.shape and np.allclose(back.affine, truth.affine)
  a, b = back.get_fdata() > 0.5, truth.get_fdata() > 0
  assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.7  # 32x32 slices, back onto 1 mm
  example = builder.as_data_source(split="test")[0]
  assert example["source_file"].decode().endswith("_fla_bet_normalized.nii.gz")
  assert example["modality"].decode() == "flair"
