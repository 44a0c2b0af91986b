"""Anomaly maps: the residual inside the brain, scored one volume at a time."""

import logging

import jax
import jax.numpy as jnp
import numpy as np

from brainseg_jax import scoring
from brainseg_jax.models import create_model, create_train_state
from configs import vae
from tests.helpers import three_channel_config


def test_positive_residual_ignores_a_reconstruction_brighter_than_the_input():
  image = jnp.array([0.2, 0.9, 0.5]).reshape(1, 3, 1)  # three voxels, one channel
  recon = jnp.array([0.5, 0.4, 0.5]).reshape(1, 3, 1)
  brain = jnp.array([True, True, False]).reshape(1, 3, 1)
  positive = scoring.anomaly_map(image, recon, brain, "positive")
  np.testing.assert_allclose(positive.ravel(), [0, 0.5, 0], atol=1e-6)
  np.testing.assert_allclose(scoring.anomaly_map(image, recon, brain, "abs").ravel(),
                             [0.3, 0.5, 0], atol=1e-6)


def test_threshold_scorer_on_three_channels_scores_the_flair_channel_alone():
  """The intensity baseline of a FLAIR+T1+T1c dataset is FLAIR thresholding, not a mix."""
  config = three_channel_config(("flair",))
  config.model.name = "threshold"
  model = create_model(config)
  scorer = scoring.scorer_for(model, config)
  images = np.stack([np.full((1, 4, 4), v, np.float32) for v in (0.7, 0.1, 0.3)], -1)
  brain = np.ones((1, 4, 4, 1), bool)
  anomaly = scorer(scorer.place(create_train_state(model, config)), images, brain)[1]
  np.testing.assert_allclose(anomaly, 0.7, atol=1e-6)
  mixed = scoring.scorer_for(model, three_channel_config())  # all channels: the mean
  np.testing.assert_allclose(mixed(mixed.place(create_train_state(model, config)), images,
                                   brain)[1], (0.7 + 0.1 + 0.3) / 3, atol=1e-6)


def test_scorer_compiles_once_for_every_volume_of_a_shape(caplog):
  """A folder of scans reuses one compiled scorer: no compilation after the first volume of
  a shape (checked with jax.log_compiles; a volume of another slice count would compile)."""
  config = vae.get_config()
  config.dataset.resolution = 32
  config.model.channels = (8, 16)
  model = create_model(config)
  scorer = scoring.scorer_for(model, config)
  state = scorer.place(create_train_state(model, config))
  rng = np.random.default_rng(0)
  volume = lambda n=12: (rng.random((n, 32, 32, 1), np.float32), np.ones((n, 32, 32, 1), bool))
  scorer(state, *volume())
  with jax.log_compiles(), caplog.at_level(logging.DEBUG):
    for _ in range(3):
      reconstruction, anomaly = scorer(state, *volume())
  compiles = [r for r in caplog.records if "Compiling" in r.getMessage()]
  assert not compiles, [r.getMessage() for r in compiles]
  assert scorer.compiled_versions() == 1
  assert reconstruction.shape == (12, 32, 32, 1) and anomaly.shape[0] == 12
