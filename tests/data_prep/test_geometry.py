"""Grid, orientation and inverse mapping, on small synthetic volumes (no registration)."""

import dataclasses

import nibabel as nib
import numpy as np
import pytest

from data_prep import cache, contact_sheet, grid, orient, pipeline, resample, synthetic
from data_prep.config import PrepConfig

# A direct map (no registration, no N4): the geometry alone is under test.
_GEOMETRY_ONLY = PrepConfig(resolution=32, resample=False, n4=False, registration="none",
                            brain_mask="given")


def _dice(a, b):
  return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_output_grid_is_the_synthetic_brain_grid():
  """Real and synthetic datasets must show the same anatomy at the same voxel."""
  ours = grid.template_brain_mask(32)
  theirs = synthetic.load_template(32).brain_mask.astype(bool)
  assert ours.shape == theirs.shape == grid.grid_geometry(32)[0]
  assert _dice(ours, theirs) > 0.97


@pytest.fixture
def psr_scan(tmp_path):
  """An ellipsoid 'brain' with a small 'lesion', stored in PSR voxel order (like IXI)."""
  shape = (60, 70, 50)  # RAS voxel order, 3 mm
  x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
  brain = ((x - 30) / 22) ** 2 + ((y - 35) / 28) ** 2 + ((z - 25) / 20) ** 2 < 1
  lesion = ((x - 38) ** 2 + (y - 40) ** 2 + (z - 30) ** 2) < 16
  image = np.where(brain, 1.0 + 0.2 * x / 60, 0.05) + lesion
  ras_affine = np.diag([3.0, 3.0, 3.0, 1.0])
  ras_affine[:3, 3] = [-90, -120, -60]
  # RAS (x, y, z) -> PSR (y reversed, z reversed, x) voxel order, same world.
  ornt = nib.orientations.axcodes2ornt(("P", "S", "R"))
  transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
  paths = {}
  for name, data in (("image", image), ("brain", brain), ("lesion", lesion)):
    img = nib.Nifti1Image(data.astype(np.float32), ras_affine).as_reoriented(transform)
    assert nib.aff2axcodes(img.affine) == ("P", "S", "R")
    paths[name] = str(tmp_path / f"{name}.nii.gz")
    nib.save(img, paths[name])
  return paths


def test_masks_follow_the_image_and_map_back_to_the_input_grid(psr_scan):
  result = pipeline.preprocess(psr_scan["image"], _GEOMETRY_ONLY, psr_scan["lesion"],
                               psr_scan["brain"])
  brain = result.brain_mask.astype(bool)
  lesion = result.anomaly_mask.astype(bool)
  assert lesion.any() and not (lesion & ~brain).any()
  # The lesion is bright in the image: aligned masks see it.
  assert result.image[lesion].mean() > result.image[brain & ~lesion].mean() + 0.3
  # Back onto the PSR input grid: same affine and shape, masks overlap their originals.
  original = nib.load(psr_scan["brain"])
  stack = np.moveaxis(result.brain_mask, -1, 0)[..., None]
  back = pipeline.to_original_grid(stack, result.record, order=0)
  assert back.shape == original.shape
  np.testing.assert_allclose(back.affine, original.affine)
  assert _dice(back.get_fdata() > 0.5, original.get_fdata() > 0.5) > 0.9
  lesion_back = pipeline.to_original_grid(np.moveaxis(result.anomaly_mask, -1, 0),
                                          result.record, order=0)
  assert _dice(lesion_back.get_fdata() > 0.5, nib.load(psr_scan["lesion"]).get_fdata() > 0.5) > 0.6


def test_record_survives_the_cache_and_slice_selection(psr_scan, tmp_path):
  config = dataclasses.replace(_GEOMETRY_ONLY, slices="brain", min_brain_fraction=0.05)
  result = pipeline.preprocess(psr_scan["image"], config, None, psr_scan["brain"])
  assert 0 < result.image.shape[-1] < grid.output_grid(32).shape[2]
  path = str(tmp_path / "cache" / "s1.npz")
  cache.save(path, result)
  again = cache.load(path)
  np.testing.assert_array_equal(again.image, result.image)
  np.testing.assert_array_equal(again.record.slice_indices, result.record.slice_indices)
  np.testing.assert_allclose(again.record.template_to_scan, result.record.template_to_scan)
  back = pipeline.to_original_grid(np.moveaxis(again.brain_mask, -1, 0), again.record, order=0)
  assert back.shape == nib.load(psr_scan["image"]).shape
  with pytest.raises(ValueError, match="does not match"):
    pipeline.to_original_grid(np.zeros((3, 32, 32)), again.record)


def test_ras_lps_round_trip_keeps_world_coordinates():
  affine = np.array([[0, 0, 2.0, -70], [-2.0, 0, 0, 110], [0, 2.0, 0, -130], [0, 0, 0, 1]])
  data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
  back, back_affine = orient.from_sitk(orient.to_sitk(data, affine))
  np.testing.assert_array_equal(back, data)
  np.testing.assert_allclose(back_affine, affine, atol=1e-6)
  # Resampling onto the same grid is the identity.
  same = resample.resample_grid(data, affine, data.shape, affine, order=1)
  np.testing.assert_allclose(same, data, atol=1e-5)


def test_n4_uses_a_given_brain_mask_and_skips_z_scored_scans(psr_scan, tmp_path):
  config = dataclasses.replace(_GEOMETRY_ONLY, n4=True, n4_shrink=2)
  result = pipeline.preprocess(psr_scan["image"], config, None, psr_scan["brain"])
  assert result.brain_mask.any() and not result.notes
  img = nib.load(psr_scan["image"])
  z_scored = str(tmp_path / "z.nii.gz")
  nib.save(nib.Nifti1Image(img.get_fdata() - 1.1, img.affine), z_scored)  # brain ~ 0 +- 0.1
  result = pipeline.preprocess(z_scored, config, None, psr_scan["brain"])
  assert any("N4 skipped" in note for note in result.notes)


def test_contact_sheet_is_written_from_the_cache(psr_scan, tmp_path):
  result = pipeline.preprocess(psr_scan["image"], _GEOMETRY_ONLY, psr_scan["lesion"],
                               psr_scan["brain"])
  for name in ("s1", "s2", "s3"):
    cache.save(cache.path_for(str(tmp_path / "work"), name), result)
  path = contact_sheet.from_cache(str(tmp_path / "work"), str(tmp_path / "sheet.png"), 32,
                                  "t1", 2)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert contact_sheet.from_cache(str(tmp_path), str(tmp_path / "none.png"), 32, "t1") == ""
