"""The residual an anomaly map is made of: chosen by modality unless the config names one."""

import jax.numpy as jnp
import numpy as np
import pytest

from brainseg_jax import scoring
from configs import vae


@pytest.mark.parametrize("modality, residual, expected", [
    ("flair", "auto", "positive"), ("t2", "auto", "positive"), ("t1", "auto", "abs"),
    ("t1c", "auto", "abs"), ("flair", "abs", "abs"), ("t1", "positive", "positive")])
def test_auto_residual_is_positive_for_hyperintense_lesions(modality, residual, expected):
  config = vae.get_config()
  config.dataset.modality, config.eval.residual = modality, residual
  assert scoring.residual_for(config) == expected


def test_positive_residual_ignores_a_reconstruction_brighter_than_the_input():
  image = jnp.array([0.2, 0.9, 0.5]).reshape(1, 3, 1)  # three voxels, one channel
  recon = jnp.array([0.5, 0.4, 0.5]).reshape(1, 3, 1)
  brain = jnp.array([True, True, False]).reshape(1, 3, 1)
  positive = scoring.anomaly_map(image, recon, brain, "positive")
  np.testing.assert_allclose(positive.ravel(), [0, 0.5, 0], atol=1e-6)
  np.testing.assert_allclose(scoring.anomaly_map(image, recon, brain, "abs").ravel(),
                             [0.3, 0.5, 0], atol=1e-6)
