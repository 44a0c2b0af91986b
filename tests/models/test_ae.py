import jax
import jax.numpy as jnp
import pytest

from brainseg_jax import config as config_lib
from brainseg_jax.errors import UserError
from brainseg_jax.models import ae, create_model, layers
from tests.helpers import as_batch


def experiment_config(name, bottleneck="dense", **model_overrides):
  """A full experiment config with a tiny model of family `name`."""
  config = config_lib.defaults(name)
  config.model.channels = (8, 16, 32)
  config.model.bottleneck = bottleneck
  config.model.latent_dim = 16
  config.model.latent_channels = 4
  if "noise_resolution" in config.model:
    config.model.noise_resolution = 8
  config.model.update(model_overrides)
  return config


def module(config):
  return ae.AutoEncoder(layers.Architecture.from_config(config.model))


@pytest.mark.parametrize("bottleneck", ["dense", "spatial"])
@pytest.mark.parametrize("norm", ["none", "group"])
def test_reconstruction_has_input_shape(bottleneck, norm):
  model = create_model(experiment_config("ae", bottleneck, norm=norm))
  state = model.create_state(jax.random.key(0), (32, 32, 1))
  assert model.reconstruct(state, jnp.ones((3, 32, 32, 1))).shape == (3, 32, 32, 1)


def test_bottleneck_sizes():
  dense = create_model(experiment_config("ae", "dense", latent_dim=16))
  params = dense.create_state(jax.random.key(0), (32, 32, 1)).params
  assert params["Bottleneck_0"]["Dense_0"]["kernel"].shape == (4 * 4 * 32, 16)
  spatial = create_model(experiment_config("ae", "spatial", latent_channels=4))
  params = spatial.create_state(jax.random.key(0), (32, 32, 1)).params
  assert params["Bottleneck_0"]["Conv_0"]["kernel"].shape == (1, 1, 32, 4)


def test_loss_is_mean_per_slice_sum_of_squared_errors():
  net = module(experiment_config("ae"))
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
  params = net.init(jax.random.key(0), images)["params"]
  loss, _ = ae.loss_fn(net, params, as_batch(images), None)
  recon = ae.reconstruct(net, params, images)
  assert jnp.allclose(loss, jnp.sum((recon - images) ** 2) / 2, rtol=1e-5)


def test_unknown_model_name_is_a_clear_error():
  with pytest.raises(UserError, match="unknown model.name 'gan'"):
    create_model(experiment_config("gan"))
