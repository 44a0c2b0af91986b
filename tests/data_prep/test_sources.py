"""What a user points predict at becomes the right scans, with the right names."""

import os

import nibabel as nib
import numpy as np
import pytest

from data_prep import dicom, load, sources
from data_prep.errors import InputFileError


def _volume(seed=0):
  data = np.random.default_rng(seed).random((40, 44, 30)).astype(np.float32) * 100 + 1
  affine = np.diag([-2.0, 2.0, 3.0, 1.0])  # LAS, as scanners often store
  affine[:3, 3] = (40.0, -44.0, -45.0)
  return data, affine


def _nifti(path, seed=0):
  data, affine = _volume(seed)
  path.parent.mkdir(parents=True, exist_ok=True)
  nib.save(nib.Nifti1Image(data, affine), str(path))
  return path


def test_a_dicom_series_reads_back_as_the_volume_it_was_written_from(tmp_path):
  data, affine = _volume()
  dicom.write_series(data, affine, str(tmp_path / "series"), "AX FLAIR")
  (found,), problems = sources.find(str(tmp_path / "series"))
  assert problems == {} and found.name == "AX_FLAIR" and len(found.dicom_files) == 30
  with sources.as_nifti(found) as path:
    # The same voxels in the same place (the reader may order slices along the other normal).
    image = nib.as_closest_canonical(load.load_volume(path))
    original = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    np.testing.assert_allclose(image.affine, original.affine, atol=1e-4)
    np.testing.assert_allclose(image.get_fdata() / image.get_fdata().max(),
                               original.get_fdata() / data.max(), atol=1e-3)  # 16-bit scaled
  assert not os.path.exists(path)  # the conversion is removed after use


def test_two_series_in_one_folder_are_two_scans_named_by_description(tmp_path):
  data, affine = _volume()
  dicom.write_series(data, affine, str(tmp_path), "AX FLAIR")
  dicom.write_series(data[::-1], affine, str(tmp_path), "SAG T1/post", seed=1)
  found, _ = sources.find(str(tmp_path))
  assert sorted(s.name for s in found) == ["AX_FLAIR", "SAG_T1_post"]
  assert all(len(s.dicom_files) == 30 for s in found)


def test_dicom_files_that_form_no_series_are_named(tmp_path):
  data, affine = _volume()
  files = dicom.write_series(data, affine, str(tmp_path / "broken"), "AX FLAIR")
  for path in files:
    with open(path, "r+b") as f:  # keep the DICM preamble, ruin the rest
      f.seek(140)
      f.write(b"\xff" * 200)
  found, problems = sources.find(str(tmp_path))
  if found:  # GDCM may still group them: then reading the series fails, naming it
    with pytest.raises(InputFileError, match="broken"), sources.as_nifti(found[0]):
      pass
  else:
    assert list(problems) == [str(tmp_path / "broken")]


def test_nested_folders_are_searched_and_repeated_stems_named_by_path(tmp_path):
  _nifti(tmp_path / "site_a" / "scan.nii.gz")
  _nifti(tmp_path / "site_b" / "deeper" / "scan.nii.gz", 1)
  _nifti(tmp_path / "other.nii", 2)
  (tmp_path / "notes.txt").write_text("not a scan")
  for mask in ("lesion_masks/scan.nii.gz", "brain_masks/other.nii", "site_a/scan_mask.nii.gz",
               "site_b/scan_seg.nii.gz", "derivatives/x/scan.nii.gz"):
    _nifti(tmp_path / mask)  # masks and labels beside the scans
  found, problems = sources.find(str(tmp_path))
  assert problems == {}
  assert sorted(s.name for s in found) == ["other", "site_a_scan", "site_b_deeper_scan"]


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_other_formats_are_converted(tmp_path, suffix):
  import SimpleITK as sitk

  data, affine = _volume()
  nifti = _nifti(tmp_path / "scan.nii.gz")
  sitk.WriteImage(sitk.ReadImage(str(nifti)), str(tmp_path / f"scan{suffix}"))
  (found,), _ = sources.find(str(tmp_path / f"scan{suffix}"))
  with sources.as_nifti(found) as path:
    image = load.load_volume(path)
  np.testing.assert_allclose(image.affine, affine, atol=1e-4)
  np.testing.assert_allclose(image.get_fdata(), data, rtol=1e-5)


def _bids(root):
  (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}')
  anat = root / "sub-01" / "anat"
  for suffix in ("FLAIR", "T1w", "ce-gd_T1w"):
    _nifti(anat / f"sub-01_{suffix}.nii.gz")
  for session in ("ses-1", "ses-2"):
    _nifti(root / "sub-02" / session / "anat" / f"sub-02_{session}_FLAIR.nii.gz")
  _nifti(root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T2w.nii.gz")
  _nifti(root / "derivatives" / "x" / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz")
  return root


def test_a_bids_dataset_gives_the_models_modality_per_session(tmp_path):
  root = _bids(tmp_path)
  assert sources.is_bids(str(root))
  flair, _ = sources.find(str(root), "flair")
  assert [s.name for s in flair] == ["sub-01_FLAIR", "sub-02_ses-1_FLAIR", "sub-02_ses-2_FLAIR"]
  t1, _ = sources.find(str(root), "t1")
  assert [s.name for s in t1] == ["sub-01_T1w"]  # not the contrast-enhanced one
  t1c, _ = sources.find(str(root), "t1c")
  assert [s.name for s in t1c] == ["sub-01_ce-gd_T1w"]


def test_a_bids_session_gives_a_multi_modal_models_other_channels(tmp_path):
  root = _bids(tmp_path)
  flair, _ = sources.find(str(root), "flair")
  extra = sources.bids_session_files(flair[0], ("t1", "t1c"))
  assert [os.path.basename(p) for p in extra] == ["sub-01_T1w.nii.gz", "sub-01_ce-gd_T1w.nii.gz"]
  with pytest.raises(InputFileError, match="0 t1 images of this session"):
    sources.bids_session_files(flair[1], ("t1",))


def test_reading_and_writing_dicom_leaves_the_locale_alone(tmp_path):
  """GDCM sets the C locale: Python would then read every text file as ASCII."""
  import locale

  before = locale.getpreferredencoding(False)
  data, affine = _volume()
  dicom.write_series(data, affine, str(tmp_path), "AX FLAIR")
  (found,), _ = sources.find(str(tmp_path))
  with sources.as_nifti(found):
    pass
  assert locale.getpreferredencoding(False) == before


def test_a_folder_is_grouped_into_sessions_by_the_modality_word_in_names(tmp_path):
  for name in ("TCGA-1_fla_bet.nii.gz", "TCGA-1_t1_bet.nii.gz", "TCGA-1_t1c_bet.nii.gz",
               "case2_FLAIR.nii.gz", "case2_T1w.nii.gz", "notes_scan.nii.gz"):
    _nifti(tmp_path / name)
  found, _ = sources.find(str(tmp_path))
  grouped, problems = sources.sessions(found, ("flair", "t1", "t1c"))
  assert {os.path.basename(s.path): [os.path.basename(p) for p in extra]
          for s, extra in grouped.items()} == {
              "TCGA-1_fla_bet.nii.gz": ["TCGA-1_t1_bet.nii.gz", "TCGA-1_t1c_bet.nii.gz"]}
  (unpaired, problem), = problems.items()
  assert os.path.basename(unpaired.path) == "case2_FLAIR.nii.gz" and "no t1c scan" in problem
