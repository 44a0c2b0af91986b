import numpy as np

from brainseg_jax import config as config_lib
from brainseg_jax import postprocess


def switches(**overrides):
  config = config_lib.defaults().eval.postprocess
  config.update(overrides)
  return config


def volume():
  rng = np.random.default_rng(0)
  image = rng.random((6, 16, 16)).astype(np.float32)
  brain = np.zeros(image.shape, bool)
  brain[:, 2:14, 2:14] = True
  anomaly = np.where(brain, rng.random(image.shape), 0).astype(np.float32)
  return anomaly, image, brain


def test_all_switches_off_only_masks_to_the_brain():
  anomaly, image, brain = volume()
  np.testing.assert_array_equal(postprocess.clean_map(anomaly, image, brain, switches()), anomaly)
  assert postprocess.active_switches(switches()) == []


def test_median_filter_removes_an_isolated_spike():
  anomaly = np.zeros((3, 9, 9), np.float32)
  anomaly[1, 4, 4] = 5.0
  brain = np.ones_like(anomaly, bool)
  cleaned = postprocess.clean_map(anomaly, anomaly, brain, switches(median_filter_size=3))
  assert cleaned.max() == 0.0
  block = np.zeros((3, 9, 9), np.float32)
  block[1, 2:7, 2:7] = 5.0  # a lesion-sized blob survives
  assert postprocess.clean_map(block, block, brain, switches(median_filter_size=3))[1, 4, 4] == 5.0


def test_median_filter_3d_looks_across_slices():
  anomaly = np.zeros((3, 9, 9), np.float32)
  anomaly[1, 2:7, 2:7] = 5.0  # one slice thick
  brain = np.ones_like(anomaly, bool)
  in_slice = postprocess.clean_map(anomaly, anomaly, brain, switches(median_filter_size=3))
  across = postprocess.clean_map(anomaly, anomaly, brain,
                                 switches(median_filter_size=3, median_filter_dims=3))
  assert in_slice[1, 4, 4] == 5.0 and across[1, 4, 4] == 0.0


def test_brain_erosion_zeroes_the_rim():
  anomaly, image, brain = volume()
  cleaned = postprocess.clean_map(anomaly, image, brain, switches(brain_erosion=1))
  assert not cleaned[:, 2, :].any() and not cleaned[0].any()
  assert cleaned[2, 7, 7] == anomaly[2, 7, 7]


def test_low_intensity_percentile_zeroes_dark_voxels():
  anomaly, image, brain = volume()
  cleaned = postprocess.clean_map(anomaly, image, brain, switches(low_intensity_percentile=50.0))
  cut = np.percentile(image[brain], 50.0)
  assert not cleaned[brain & (image < cut)].any()
  np.testing.assert_array_equal(cleaned[brain & (image >= cut)], anomaly[brain & (image >= cut)])


def test_small_components_are_removed():
  prediction = np.zeros((4, 10, 10), bool)
  prediction[1, 1, 1] = True  # 1 voxel
  prediction[2, 4:7, 4:7] = True  # 9 voxels
  cleaned = postprocess.clean_prediction(prediction, min_component_size=5)
  assert not cleaned[1, 1, 1] and cleaned[2, 5, 5] and cleaned.sum() == 9
  assert postprocess.active_switches(switches(min_component_size=5)) == ["min_component_size_5"]
