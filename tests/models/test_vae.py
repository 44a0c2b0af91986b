import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brainseg_jax.models import create_model, layers, vae
from tests.helpers import as_batch
from tests.models.test_ae import experiment_config


def vae_module(bottleneck="dense"):
  return vae.VariationalAutoEncoder(layers.Architecture.from_config(
      experiment_config("vae", bottleneck).model))


def test_kl_divergence_matches_hand_computation():
  mean = jnp.array([[0.0, 1.0], [2.0, -1.0]])
  log_var = jnp.array([[0.0, 0.0], [np.log(2.0), np.log(0.5)]])
  # 0.5 * (var + mean^2 - 1 - log var), summed per example
  expected = [0.5 * (0 + 1), 0.5 * (2 + 4 - 1 - np.log(2)) + 0.5 * (0.5 + 1 - 1 - np.log(0.5))]
  np.testing.assert_allclose(vae.kl_divergence(mean, log_var), expected, rtol=1e-6)


def test_kl_is_zero_at_the_prior():
  assert float(jnp.sum(vae.kl_divergence(jnp.zeros((2, 5)), jnp.zeros((2, 5))))) == 0.0


@pytest.mark.parametrize("bottleneck", ["dense", "spatial"])
def test_loss_is_reconstruction_plus_weighted_kl(bottleneck):
  net = vae_module(bottleneck)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
  params = net.init(jax.random.key(0), images)["params"]
  rng = jax.random.key(2)
  loss_light, m = vae.loss_fn(net, params, as_batch(images), rng, kl_weight=0.5)
  loss_heavy, _ = vae.loss_fn(net, params, as_batch(images), rng, kl_weight=3.0)
  assert m["kl"] > 0 and m["reconstruction"] > 0
  np.testing.assert_allclose(loss_light, m["reconstruction"] + 0.5 * m["kl"], rtol=1e-5)
  np.testing.assert_allclose(loss_heavy, m["reconstruction"] + 3.0 * m["kl"], rtol=1e-5)


def test_training_samples_but_scoring_is_deterministic():
  model = create_model(experiment_config("vae"))
  state = model.create_state(jax.random.key(0), (32, 32, 1))
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
  sampled_a = state.apply_fn({"params": state.params}, images, jax.random.key(3))[0]
  sampled_b = state.apply_fn({"params": state.params}, images, jax.random.key(4))[0]
  assert not jnp.allclose(sampled_a, sampled_b)
  recon = model.reconstruct(state, images)
  assert recon.shape == images.shape
  np.testing.assert_array_equal(recon, model.reconstruct(state, images))
