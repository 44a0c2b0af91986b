"""Intensity augmentation: inside the brain only, random per slice, off unless asked."""

import jax
import numpy as np
import pytest

from brainseg_jax import augment
from brainseg_jax import config as config_lib
from brainseg_jax.errors import UserError


def _batch():
  rows, cols = np.mgrid[:32, :32]
  brain = ((rows - 16) ** 2 + (cols - 16) ** 2 < 144)[None, ..., None].repeat(4, 0)
  image = np.where(brain, 0.3 + 0.4 * rows[None, ..., None] / 32, 0.0).astype(np.float32)
  return image, brain


def _settings(probability):
  settings = augment.config()
  settings.intensity = True
  settings.probability = probability
  return settings


def test_every_transform_changes_the_brain_and_never_the_background():
  image, brain = _batch()
  out = np.asarray(augment.intensity(jax.random.key(0), image, brain, _settings(1.0)))
  assert np.isfinite(out).all()
  assert np.array_equal(out[~brain], image[~brain])
  assert np.abs(out - image)[brain].mean() > 0.01
  # slices draw their own transforms
  assert not np.allclose(out[0], out[1])
  # the same key, the same slices: a resumed run sees the same batch
  again = np.asarray(augment.intensity(jax.random.key(0), image, brain, _settings(1.0)))
  assert np.array_equal(out, again)


def test_probability_zero_changes_nothing():
  image, brain = _batch()
  out = np.asarray(augment.intensity(jax.random.key(0), image, brain, _settings(0.0)))
  np.testing.assert_allclose(out, image, atol=1e-5)


def test_the_train_step_trains_on_augmented_slices():
  from brainseg_jax import models

  config = config_lib.smoke(config_lib.defaults("ae"))
  model = models.create_model(config)
  state = models.create_train_state(model, config)
  image, brain = _batch()
  size = config.dataset.resolution
  batch = {"image": np.resize(image, (8, size, size, 1)) * 0 + 0.5,
           "brain_mask": np.ones((8, size, size, 1), bool)}
  plain = jax.jit(model.train_step)(state, batch)[1]["loss"]
  config.augment = _settings(1.0)
  augmented = jax.jit(models.create_model(config).train_step)(state, batch)[1]["loss"]
  assert np.isfinite(augmented) and augmented != plain


@pytest.mark.parametrize("family", ["fanogan", "threshold"])
def test_families_without_a_reconstruction_step_refuse_it(family):
  config = config_lib.smoke(config_lib.defaults(family))
  config.augment.intensity = True
  with pytest.raises(UserError, match="augment.intensity"):
    config_lib.check(config)


def test_out_of_range_settings_name_the_key():
  config = config_lib.defaults("unet_dae")
  config.augment.gamma = 0.5
  with pytest.raises(UserError, match="augment.gamma"):
    config_lib.check(config)
