import numpy as np

from brainseg_jax.datasets import input_pipeline


def _slice(lesion_value):
  """A 32x32 brain: tissue 0.4 inside a disc, a 3x3 lesion of `lesion_value` in it."""
  yy, xx = np.mgrid[:32, :32]
  brain = ((yy - 16) ** 2 + (xx - 16) ** 2 < 14 ** 2)[..., None]
  image = np.where(brain, 0.4, 0.0).astype(np.float32)
  lesion = np.zeros_like(brain)
  lesion[10:13, 15:18] = True
  image[lesion] = lesion_value
  return {"image": image, "brain_mask": brain.astype(np.uint8),
          "anomaly_mask": lesion.astype(np.uint8)}


def test_training_images_never_show_an_annotated_lesion():
  example = _slice(lesion_value=1.3)
  image = input_pipeline.healthy_training_image(example)
  lesion = example["anomaly_mask"].astype(bool)
  np.testing.assert_allclose(image[lesion], 0.4)  # painted with the tissue around it
  np.testing.assert_array_equal(image[~lesion], example["image"][~lesion])


def test_healthy_slices_pass_unchanged():
  example = _slice(lesion_value=0.4)
  example["anomaly_mask"][:] = 0
  assert input_pipeline.healthy_training_image(example) is example["image"]


def test_a_training_example_is_the_healthy_image_and_its_brain_mask():
  example = _slice(lesion_value=1.3)
  seen = input_pipeline.training_example(example)
  assert set(seen) == {"image", "brain_mask"}
  np.testing.assert_array_equal(seen["image"], input_pipeline.healthy_training_image(example))
  assert seen["brain_mask"].dtype == bool
  np.testing.assert_array_equal(seen["brain_mask"], example["brain_mask"].astype(bool))
