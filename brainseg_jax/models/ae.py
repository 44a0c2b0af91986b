"""Deterministic autoencoder: the simplest reconstruction-based anomaly model.

Trained on healthy slices only, it learns to reproduce normal anatomy; at test
time whatever it cannot reproduce (|x - x_hat|) is the anomaly map.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

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
