"""Denoising autoencoder with coarse noise (Kascenas et al., MIDL 2022).

Fine (per-pixel) noise is easy to remove without learning anatomy; noise drawn
on a coarse grid and upsampled makes blob-sized corruptions, which the model can
only undo by knowing what healthy tissue looks like there. At test time the
clean input goes in, and a lesion is just another blob to "denoise" away. The
network is the autoencoder's (`ae.AutoEncoder`), usually with a spatial bottleneck.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections

from brainseg_jax.models import ae, layers, reconstruction


def coarse_noise(rng, shape, noise_std: float, noise_resolution: int):
  """Gaussian noise on a noise_resolution^2 grid, bilinearly upsampled to `shape` (B, H, W, C)."""
  batch, height, width, channels = shape
  coarse = noise_std * jax.random.normal(rng, (batch, noise_resolution, noise_resolution,
                                               channels))
  return jax.image.resize(coarse, shape, method="bilinear")


def loss_fn(module, params, batch, rng, noise_std=0.2, noise_resolution=16):
  """Per-slice sum of squared errors: reconstruction of the noisy slice vs the clean slice.

  Noise and loss cover the whole slice; `unet_dae` is the published variant that
  restricts both to the brain.
  """
  images = batch["image"]
  noisy = images + coarse_noise(rng, images.shape, noise_std, noise_resolution)
  recon = module.apply({"params": params}, noisy)
  loss = jnp.mean(jnp.sum(jnp.square(recon - images), axis=(1, 2, 3)))
  return loss, {"loss": loss}


def create_model(config: ml_collections.ConfigDict):
  module = ae.AutoEncoder(layers.Architecture.from_config(config.model))
  loss = functools.partial(loss_fn, module, noise_std=config.model.noise_std,
                           noise_resolution=config.model.noise_resolution)
  return reconstruction.make_model("dae", module, loss, functools.partial(ae.reconstruct, module),
                                   config)
