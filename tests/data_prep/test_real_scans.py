"""Preprocessing real sample scans: registration quality, mask alignment, inverse mapping.

Uses ../shared/data (skips cleanly without it). One scan per data set, at
resolution 64, each preprocessed once per module.
"""

import nibabel as nib
import numpy as np
import pytest

from data_prep import pipeline, register
from data_prep.config import PrepConfig

pytestmark = pytest.mark.slow  # registers real scans


def _dice(a, b):
  return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def tcga(sample_data_dir):
  case = sample_data_dir / "tcga_glioma" / "TCGA-DU-7294"
  image = case / "TCGA-DU-7294_fla_bet_normalized.nii.gz"
  labels = case / "TCGA-DU-7294_tumor_fusion_mav.nii.gz"
  return image, labels, pipeline.preprocess(image, PrepConfig(resolution=64, modality="flair"),
                                            anomaly_mask_path=labels)


@pytest.fixture(scope="module")
def elderly(sample_data_dir):
  root = sample_data_dir / "elderly_flair"
  return pipeline.preprocess(root / "flair" / "Subj10_FL.nii.gz",
                             PrepConfig(resolution=64, modality="flair"),
                             anomaly_mask_path=root / "wmh" / "Subj10_FL_DLWMLS.nii.gz")


def test_tumour_mask_stays_on_the_bright_tumour(tcga):
  _, _, result = tcga
  brain = result.brain_mask.astype(bool)
  tumour = result.anomaly_mask.astype(bool)
  assert tumour.sum() > 500
  # FLAIR oedema is bright: a misaligned mask would average normal tissue.
  assert result.image[tumour].mean() > result.image[brain & ~tumour].mean() + 0.25


def test_inverse_mapping_returns_the_input_grid(tcga):
  image_path, labels_path, result = tcga
  original = nib.load(image_path)
  back = pipeline.to_original_grid(np.moveaxis(result.brain_mask, -1, 0)[..., None],
                                   result.record, order=0)
  assert back.shape == original.shape
  np.testing.assert_allclose(back.affine, original.affine)
  carried = pipeline.template_mask_on_scan(result.record)
  assert _dice(back.get_fdata() > 0.5, carried) > 0.9
  # The skull-stripped scan's own brain (> 0 here, where that is what it means) agrees too.
  assert _dice(carried, original.get_fdata() > 0) > 0.9
  tumour_back = pipeline.to_original_grid(np.moveaxis(result.anomaly_mask, -1, 0),
                                          result.record, order=0).get_fdata() > 0.5
  assert _dice(tumour_back, nib.load(labels_path).get_fdata() > 0) > 0.7


def test_elderly_lesion_mask_stays_on_bright_white_matter_lesions(elderly):
  brain = elderly.brain_mask.astype(bool)
  lesion = elderly.anomaly_mask.astype(bool)
  assert lesion.sum() > 50
  assert elderly.image[lesion].mean() > elderly.image[brain & ~lesion].mean() + 0.2


@pytest.fixture(scope="module")
def ixi079(sample_data_dir):
  return pipeline.preprocess(sample_data_dir / "ixi_t1" / "t1" / "IXI079-HH-1388_T1.nii.gz",
                             PrepConfig(resolution=32))


def test_template_brain_mask_matches_the_ixi_parcellation(sample_data_dir, ixi079):
  """IXI079 is a scan where, without the scale prior, the template brain grew over the skull."""
  root = sample_data_dir / "ixi_t1"
  result = ixi079
  parcellation = nib.load(root / "dlmuse" / "IXI079-HH-1388_T1_DLMUSE.nii.gz").get_fdata() > 0
  assert _dice(pipeline.template_mask_on_scan(result.record), parcellation) > 0.92


def test_preprocessing_is_reproducible(sample_data_dir, ixi079, fresh_registration):
  """The same scan and config give the same registration and slices, run after run."""
  again = pipeline.preprocess(sample_data_dir / "ixi_t1" / "t1" / "IXI079-HH-1388_T1.nii.gz",
                              PrepConfig(resolution=32))
  np.testing.assert_array_equal(again.record.template_to_scan, ixi079.record.template_to_scan)
  np.testing.assert_array_equal(again.image, ixi079.image)


def test_two_threads_register_the_same_scan_within_a_hair(sample_data_dir, ixi079,
                                                          fresh_registration):
  """predict registers with every core: not bit-equal to one thread, but the same fit."""
  threaded = pipeline.preprocess(sample_data_dir / "ixi_t1" / "t1" / "IXI079-HH-1388_T1.nii.gz",
                                 PrepConfig(resolution=32), threads=2)
  one, two = ixi079.record.template_to_scan, threaded.record.template_to_scan
  np.testing.assert_allclose(two[:3, :3], one[:3, :3], atol=0.01)  # scale/rotation
  np.testing.assert_allclose(two[:3, 3], one[:3, 3], atol=0.5)  # mm: a fraction of a voxel


def test_clock_seeded_registration_is_refused():
  with pytest.raises(ValueError, match="registration_seed must be > 0"):
    register._method(None, seed=0, metric="mattes_mi")
