"""Deterministic autoencoder: the simplest reconstruction-based anomaly model.

Trained on healthy slices only, it learns to reproduce normal anatomy; at test
time whatever it cannot reproduce (|x - x_hat|) is the anomaly map.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from brainseg_jax.errors import UserError, one_of, positive_int, require
from brainseg_jax.models import layers, reconstruction


class AutoEncoder(nn.Module):
  """Conv encoder, dense or spatial bottleneck, conv decoder (see layers.Architecture)."""

  architecture: layers.Architecture

  @nn.compact
  def __call__(self, x):
    arch = self.architecture
    h = layers.Encoder(arch.channels, arch.blocks_per_level, arch.norm)(x)
    z = layers.Bottleneck(arch.bottleneck, arch.latent_dim, arch.latent_channels)(h)
    h = layers.FromLatent(arch.bottleneck, h.shape[1:])(z)
    return layers.Decoder(arch.channels, x.shape[-1], arch.blocks_per_level, arch.norm)(h)


def loss_fn(module, params, batch, rng):
  """Mean over the batch of the per-slice sum of squared errors (the whole slice)."""
  del rng  # deterministic model
  images = batch["image"]
  recon = module.apply({"params": params}, images)
  loss = jnp.mean(jnp.sum(jnp.square(recon - images), axis=(1, 2, 3)))
  return loss, {"loss": loss}


def reconstruct(module, params, images):
  return module.apply({"params": params}, images)


def create_model(config: ml_collections.ConfigDict):
  module = AutoEncoder(layers.Architecture.from_config(config.model))
  return reconstruction.make_model("ae", module, functools.partial(loss_fn, module),
                                   functools.partial(reconstruct, module), config)


# --------------------------------------------------------------------------- config


# Model keys that shape training only: a trained model is scored the same whatever their value, so
# config.model_differences does not compare them. None here: every key shapes the network.
TRAINING_ONLY_KEYS = ()


def model_config() -> ml_collections.ConfigDict:
  """The encoder/bottleneck/decoder keys (layers.Architecture), shared by the AE, VAE and DAE."""
  model = ml_collections.ConfigDict()
  model.name = "ae"
  model.channels = (16, 32, 64, 128)  # features per level, one halving each
  model.bottleneck = "dense"  # or "spatial"
  model.latent_dim = 128  # dense bottleneck
  model.latent_channels = 16  # spatial bottleneck
  model.blocks_per_level = 1
  model.norm = "none"  # "group", "layer"
  return model


def smoke(model: ml_collections.ConfigDict) -> None:
  """A few thousand parameters: trains in seconds at 64x64."""
  model.channels = (8, 16, 32)
  model.latent_dim = 32


_BOTTLENECKS = ("dense", "spatial")
_NORMS = ("none", "group", "layer")
_GROUPS = 8  # layers.GroupNorm's group count: group norm needs channels divisible by it


def check(config: ml_collections.ConfigDict) -> None:
  """The architecture keys against each other and the image size."""
  model = config.model
  channels = tuple(model.channels)
  require(len(channels) > 0 and all(isinstance(c, int) and c > 0 for c in channels),
          "model.channels", channels, "a non-empty tuple of positive integers")
  factor = 2 ** len(channels)
  if config.dataset.resolution % factor:
    raise UserError(f"dataset.resolution {config.dataset.resolution} is not divisible by "
                    f"2^{len(channels)} = {factor}, the encoder's downsampling "
                    f"(one halving per entry of model.channels)")
  one_of(model.bottleneck, _BOTTLENECKS, "model.bottleneck")
  one_of(model.norm, _NORMS, "model.norm")
  if model.norm == "group":
    require(all(c % _GROUPS == 0 for c in channels), "model.channels", channels,
            f"multiples of {_GROUPS} with model.norm='group'")
  for key in ("latent_dim", "latent_channels", "blocks_per_level"):
    positive_int(model, key, "model.")
