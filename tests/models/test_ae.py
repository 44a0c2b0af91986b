import jax
import jax.numpy as jnp
import ml_collections
import pytest

from brainseg_jax.models import create_model


def model_config(name, bottleneck="dense", **overrides):
  config = dict(name=name, channels=(8, 16, 32), bottleneck=bottleneck, latent_dim=16,
                latent_channels=4, blocks_per_level=1, norm="none", kl_weight=1.0)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


@pytest.mark.parametrize("bottleneck", ["dense", "spatial"])
@pytest.mark.parametrize("norm", ["none", "group"])
def test_reconstruction_has_input_shape(bottleneck, norm):
  model = create_model(model_config("ae", bottleneck, norm=norm))
  images = jnp.ones((3, 32, 32, 1))
  params = model.init(jax.random.key(0), images)
  assert model.reconstruct(params, images).shape == (3, 32, 32, 1)


def test_bottleneck_sizes():
  images = jnp.ones((2, 32, 32, 1))
  dense = create_model(model_config("ae", "dense", latent_dim=16))
  params = dense.init(jax.random.key(0), images)
  assert params["Bottleneck_0"]["Dense_0"]["kernel"].shape == (4 * 4 * 32, 16)
  spatial = create_model(model_config("ae", "spatial", latent_channels=4))
  params = spatial.init(jax.random.key(0), images)
  assert params["Bottleneck_0"]["Conv_0"]["kernel"].shape == (1, 1, 32, 4)


def test_loss_is_mean_per_slice_sum_of_squared_errors():
  model = create_model(model_config("ae"))
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
  params = model.init(jax.random.key(0), images)
  loss, _ = model.loss(params, images, None)
  recon = model.reconstruct(params, images)
  assert jnp.allclose(loss, jnp.sum((recon - images) ** 2) / 2, rtol=1e-5)


def test_unknown_model_name_is_a_clear_error():
  from brainseg_jax.errors import UserError
  with pytest.raises(UserError, match="unknown model.name 'gan'"):
    create_model(model_config("gan"))
