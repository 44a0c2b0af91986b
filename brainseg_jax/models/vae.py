"""Variational autoencoder (Kingma & Welling) for anomaly segmentation.

The KL term pulls healthy slices onto a smooth latent prior, so the decoder
cannot memorise, and reproduces, arbitrary (anomalous) detail. For scoring,
the decoder is fed the posterior mean: the reconstruction is then
deterministic and the residual does not carry sampling noise.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from brainseg_jax.errors import require
from brainseg_jax.models import ae, layers, reconstruction


class VariationalAutoEncoder(nn.Module):
  """Same encoder/decoder as the AE, with a Gaussian posterior at the bottleneck."""

  architecture: layers.Architecture

  @nn.compact
  def __call__(self, x, rng=None):
    """Returns (reconstruction, mean, log_variance).

    With `rng` the latent is sampled (training); without it the posterior mean
    is decoded (scoring).
    """
    arch = self.architecture
    h = layers.Encoder(arch.channels, arch.blocks_per_level, arch.norm)(x)
    stats = layers.Bottleneck(arch.bottleneck, arch.latent_dim, arch.latent_channels,
                              num_outputs=2)(h)
    mean, log_var = jnp.split(stats, 2, axis=-1)
    log_var = jnp.clip(log_var, -10.0, 10.0)  # keeps exp() finite early in training
    z = mean
    if rng is not None:
      z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape, mean.dtype)
    h = layers.FromLatent(arch.bottleneck, h.shape[1:])(z)
    recon = layers.Decoder(arch.channels, x.shape[-1], arch.blocks_per_level, arch.norm)(h)
    return recon, mean, log_var


def kl_divergence(mean, log_var):
  """KL(N(mean, exp(log_var)) || N(0, 1)), summed over all latent units per example."""
  kl = 0.5 * (jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var)
  return jnp.sum(kl.reshape(kl.shape[0], -1), axis=-1)


def loss_fn(module, params, batch, rng, kl_weight=1.0):
  """Negative ELBO up to constants: per-slice sum of squared errors + kl_weight * KL."""
  images = batch["image"]
  recon, mean, log_var = module.apply({"params": params}, images, rng)
  reconstruction = jnp.mean(jnp.sum(jnp.square(recon - images), axis=(1, 2, 3)))
  kl = jnp.mean(kl_divergence(mean, log_var))
  loss = reconstruction + kl_weight * kl
  return loss, {"loss": loss, "reconstruction": reconstruction, "kl": kl}


def reconstruct(module, params, images):
  return module.apply({"params": params}, images)[0]


def create_model(config: ml_collections.ConfigDict):
  module = VariationalAutoEncoder(layers.Architecture.from_config(config.model))
  loss = functools.partial(loss_fn, module, kl_weight=config.model.kl_weight)
  return reconstruction.make_model("vae", module, loss, functools.partial(reconstruct, module),
                                   config)


# --------------------------------------------------------------------------- config


# Model keys that shape training only: a trained model is scored the same whatever their value, so
# config.model_differences does not compare them. The KL weight shapes training only: scoring
# reconstructs from the mean.
TRAINING_ONLY_KEYS = ("kl_weight",)


def model_config() -> ml_collections.ConfigDict:
  """The AE's architecture keys and the weight of the KL term."""
  model = ae.model_config()
  model.name = "vae"
  # Weight of the KL term against the per-slice sum of squared errors.
  model.kl_weight = 1.0
  return model


smoke = ae.smoke


def check(config: ml_collections.ConfigDict) -> None:
  ae.check(config)
  require(config.model.kl_weight >= 0, "model.kl_weight", config.model.kl_weight, "a number >= 0")
