"""A header no head scan has is refused before a voxel is read, naming the file."""

import gzip
import io
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from data_prep import load
from data_prep.errors import InputFileError


def _header_only(path, shape, spacing=1.0, dtype=np.float32):
  """A .nii.gz of a header declaring `shape`, and no voxels: a few hundred bytes."""
  header = nib.Nifti1Header()
  header.set_data_shape(shape)
  header.set_data_dtype(dtype)
  header.set_zooms((spacing,) * len(shape))
  header.set_sform(np.diag([spacing] * 3 + [1.0]), code=1)
  buffer = io.BytesIO()
  header.write_to(buffer)
  path.write_bytes(gzip.compress(buffer.getvalue() + b"\0" * 4))
  return path


def _scan(path, data, affine, **header_fields):
  image = nib.Nifti1Image(data, affine)
  for key, value in header_fields.items():
    image.header[key] = value
  nib.save(image, str(path))
  return path


@pytest.mark.parametrize("shape, spacing, problem", [
    ((2000, 2000, 2000), 0.1, "declares 2000 x 2000 x 2000 voxels"),
    ((1024, 1024, 1024), 0.2, "declares 1024 x 1024 x 1024 voxels"),
    ((64, 64, 40), 50.0, "voxel size 50 x 50 x 50 mm"),
    ((64, 64, 64), 10.0, "field of view 640 x 640 x 640 mm"),
    ((64, 64, 64), 0.5, "field of view 32 x 32 x 32 mm"),
])
def test_an_implausible_header_is_refused_before_reading(tmp_path, shape, spacing, problem):
  path = _header_only(tmp_path / "bomb.nii.gz", shape, spacing)
  assert path.stat().st_size < 1000
  tracemalloc.start()
  try:
    with pytest.raises(InputFileError, match=f"bomb.nii.gz: .*{problem}"):
      load.load_volume(path)
    assert tracemalloc.get_traced_memory()[1] < 50e6  # refused from the header alone
  finally:
    tracemalloc.stop()


def test_a_scan_needing_more_memory_than_is_free_is_refused(tmp_path, monkeypatch):
  path = _header_only(tmp_path / "big.nii.gz", (512, 512, 400), 0.5)
  monkeypatch.setattr(load, "available_memory", lambda: 4 * 2**30)
  with pytest.raises(InputFileError, match=r"big.nii.gz: .*need about 7\.\d GB .* 4\.0 GB free"):
    load.load_volume(path)


@pytest.mark.parametrize("srows", [0.0, np.nan])
def test_a_lost_orientation_is_refused(tmp_path, srows):
  path = tmp_path / "lost.nii"
  image = nib.Nifti1Image(np.ones((60, 60, 50), np.float32), np.diag([2.0, 2, 2, 1]))
  image.header["qform_code"] = 0
  nib.save(image, str(path))
  raw = bytearray(path.read_bytes())
  raw[280:328] = np.full(12, srows, np.float32).tobytes()  # srow_x, srow_y, srow_z
  path.write_bytes(bytes(raw))
  with pytest.raises(InputFileError, match="lost.nii: .*(affine is not finite or collapses an "
                                           "axis|unreadable NIfTI header)"):
    load.load_volume(path)


def test_voxel_types_that_are_no_grey_levels_are_refused(tmp_path):
  affine = np.diag([2.0, 2, 2, 1])
  rgb = np.zeros((60, 60, 50), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
  _scan(tmp_path / "rgb.nii.gz", rgb, affine)
  with pytest.raises(InputFileError, match="rgb.nii.gz: voxel type .* is not a grey-level"):
    load.load_volume(tmp_path / "rgb.nii.gz")
  _scan(tmp_path / "complex.nii.gz", np.ones((60, 60, 50), np.complex64), affine)
  with pytest.raises(InputFileError, match="complex.nii.gz: complex-valued voxels"):
    load.load_volume(tmp_path / "complex.nii.gz")


def test_an_unknown_datatype_code_is_one_error(tmp_path, capfd):
  path = _scan(tmp_path / "code.nii", np.ones((60, 60, 50), np.float32), np.diag([2.0, 2, 2, 1]))
  raw = bytearray(path.read_bytes())
  raw[70:72] = np.int16(9999).tobytes()  # the header's datatype field
  path.write_bytes(bytes(raw))
  with pytest.raises(InputFileError, match="code.nii: unreadable NIfTI header"):
    load.load_volume(path)
  assert capfd.readouterr().err == ""  # nibabel's own report of it is not a second line


def test_disagreeing_orientations_are_said_and_kept(tmp_path):
  image = nib.Nifti1Image(np.ones((60, 60, 50), np.int16), np.diag([2.0, 2, 2, 1]))
  qform = np.diag([2.0, 2, 2, 1])
  qform[:3, 3] = (10.0, 0.0, 0.0)
  image.set_qform(qform, code=1)
  nib.save(image, str(tmp_path / "two.nii.gz"))
  loaded = load.load_volume(tmp_path / "two.nii.gz")
  assert "disagree by up to 10.0 mm; the sform was used" in load.orientation_note(loaded)
  assert (int(loaded.header["sform_code"]), int(loaded.header["qform_code"])) == (2, 1)
  np.testing.assert_allclose(loaded.header.get_qform(), qform)
  agreeing = nib.Nifti1Image(np.ones((60, 60, 50), np.int16), np.diag([2.0, 2, 2, 1]))
  agreeing.set_qform(np.diag([2.0, 2, 2, 1]), code=1)
  assert load.orientation_note(agreeing) is None
