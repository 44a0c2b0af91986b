"""Bad input files give one clear error naming the file (not a crash deep in SimpleITK)."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from brainseg_jax.errors import USER_ERRORS
from data_prep import load
from data_prep.errors import InputFileError

# 12 mm voxels: these few voxels span a head's field of view (load.check_header).
_AFFINE = np.diag([12.0, 12.0, 12.0, 1.0])


def _save(path, data, affine=None):
  nib.save(nib.Nifti1Image(np.asarray(data, np.float32), _AFFINE if affine is None else affine),
           str(path))
  return path


@pytest.fixture
def good(tmp_path):
  return _save(tmp_path / "good.nii.gz", np.random.default_rng(0).random((8, 9, 10)) + 1)


def test_good_volume_loads_as_float32(good):
  img = load.load_volume(good)
  assert img.shape == (8, 9, 10) and img.get_data_dtype() == np.float32


@pytest.mark.parametrize("name,data,problem", [
    ("four_d.nii.gz", np.ones((4, 4, 4, 3)), "expected a 3D volume"),
    ("flat.nii.gz", np.ones((8, 8, 1)), "2D image"),
    ("zeros.nii.gz", np.zeros((4, 4, 4)), "all voxels are zero"),
    ("nan.nii.gz", np.where(np.eye(4)[:, :, None] > 0, np.nan, 1.0) * np.ones((4, 4, 4)),
     "NaN/inf"),
])
def test_bad_volumes_are_refused_naming_the_file(tmp_path, name, data, problem):
  path = _save(tmp_path / name, data)
  with pytest.raises(InputFileError, match=problem) as info:
    load.load_volume(path)
  assert name in str(info.value) and isinstance(info.value, USER_ERRORS)


def test_singleton_fourth_axis_is_squeezed(tmp_path):
  path = _save(tmp_path / "one.nii.gz", np.ones((4, 5, 6, 1)))
  assert load.load_volume(path).shape == (4, 5, 6)


def test_truncated_and_corrupt_files(tmp_path, good):
  raw = good.read_bytes()
  truncated = tmp_path / "truncated.nii.gz"
  truncated.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(InputFileError, match="truncated.nii.gz"):
    load.load_volume(truncated)
  garbage = tmp_path / "garbage.nii.gz"
  garbage.write_bytes(gzip.compress(b"not a nifti header" * 10))
  with pytest.raises(InputFileError, match="garbage.nii.gz"):
    load.load_volume(garbage)
  with pytest.raises(InputFileError, match="file not found"):
    load.load_volume(tmp_path / "missing.nii.gz")


def test_mask_on_another_grid_is_refused(tmp_path, good):
  ref = load.load_volume(good)
  other_shape = _save(tmp_path / "shape.nii.gz", np.ones((8, 9, 11)))
  with pytest.raises(InputFileError, match="shape.nii.gz.*another grid"):
    load.load_mask(other_shape, ref, good)
  shifted = _AFFINE.copy()
  shifted[0, 3] = 5.0
  other_affine = _save(tmp_path / "affine.nii.gz", np.ones((8, 9, 10)), shifted)
  with pytest.raises(InputFileError, match="affine.nii.gz.*another grid"):
    load.load_mask(other_affine, ref, good)
  same = _save(tmp_path / "mask.nii.gz", np.ones((8, 9, 10)))
  assert load.load_mask(same, ref, good).get_data_dtype() == np.uint8
