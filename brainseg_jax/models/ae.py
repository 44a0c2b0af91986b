"""Deterministic autoencoder: the simplest reconstruction-based anomaly model.

Trained on healthy slices only, it learns to reproduce normal anatomy; at test
time whatever it cannot reproduce (|x - x_hat|) is the anomaly map.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from brainseg_jax.models import layers


class AutoEncoder(nn.Module):
  """Conv encoder, dense or spatial bottleneck, conv decoder.

  Attributes:
    channels: features per resolution level; len(channels) halvings.
    bottleneck: "dense" (a latent vector of `latent_dim`) or "spatial" (a
      feature map with `latent_channels` channels at the lowest resolution).
  """

  channels: Sequence[int]
  bottleneck: str = "dense"
  latent_dim: int = 128
  latent_channels: int = 16
  blocks_per_level: int = 1
  norm: str = "none"

  @nn.compact
  def __call__(self, x):
    h = layers.Encoder(self.channels, self.blocks_per_level, self.norm)(x)
    z = layers.Bottleneck(self.bottleneck, self.latent_dim, self.latent_channels)(h)
    h = layers.FromLatent(self.bottleneck, h.shape[1:])(z)
    return layers.Decoder(self.channels, 1, self.blocks_per_level, self.norm)(h)


def loss_fn(module, params, images, rng):
  """Mean over the batch of the per-slice sum of squared errors."""
  del rng  # deterministic model
  recon = module.apply({"params": params}, images)
  loss = jnp.mean(jnp.sum(jnp.square(recon - images), axis=(1, 2, 3)))
  return loss, {"loss": loss}


def reconstruct(module, params, images):
  return module.apply({"params": params}, images)
