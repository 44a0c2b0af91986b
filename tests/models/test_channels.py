"""Every model family takes several modalities as channels and gives one anomaly map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brainseg_jax import config as config_lib
from brainseg_jax import scoring
from brainseg_jax.models import create_model, create_train_state
from configs import ae, dae, fanogan, threshold, unet_dae, vae
from tests.helpers import as_batch

pytestmark = pytest.mark.slow  # compiles every family


@pytest.mark.parametrize("config_module", [ae, vae, dae, unet_dae, fanogan, threshold])
def test_three_channels_in_three_out_one_map(config_module):
  config = config_module.get_config("smoke")
  config.dataset.resolution = 32
  config.dataset.modalities = ("flair", "t1", "t1c")
  model = create_model(config)
  state = create_train_state(model, config)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  brain = np.ones((2, 32, 32, 1), bool)
  if model.trainable:
    state, metrics = jax.jit(model.train_step)(state, as_batch(images, brain))
    assert all(np.isfinite(float(v)) for v in jax.tree.leaves(metrics))
  recon = model.reconstruct(state, images)
  assert recon.shape == (2, 32, 32, 3)
  anomaly = scoring.anomaly_map(images, recon, brain, config_lib.residual(config))
  assert anomaly.shape == (2, 32, 32, 1)
  np.testing.assert_allclose(anomaly, jnp.mean(jnp.abs(images - recon), -1, keepdims=True),
                             atol=1e-6)  # T1 in the channels: "auto" is the absolute residual
