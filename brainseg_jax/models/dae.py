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

from brainseg_jax.errors import positive_int, require
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


# --------------------------------------------------------------------------- config


# Model keys that shape training only: a trained model is scored the same whatever their value, so
# config.model_differences does not compare them. The noise is drawn in training only: scoring
# reconstructs the clean scan.
TRAINING_ONLY_KEYS = ("noise_std", "noise_resolution")


def model_config() -> ml_collections.ConfigDict:
  """The AE's architecture with a spatial bottleneck, and the coarse noise."""
  model = ae.model_config()
  model.name = "dae"
  model.bottleneck = "spatial"
  model.latent_channels = 64
  # Noise std (intensities are ~[0, 1]) and the side of the grid it is drawn on
  # before bilinear upsampling: 16 on a 128 image makes blobs of ~8 pixels.
  model.noise_std = 0.2
  model.noise_resolution = 16
  return model


def smoke(model: ml_collections.ConfigDict) -> None:
  ae.smoke(model)
  model.noise_resolution = 8  # the same blob size on the smoke run's 64x64 slices


def check(config: ml_collections.ConfigDict) -> None:
  ae.check(config)
  check_noise(config)


def check_noise(config: ml_collections.ConfigDict) -> None:
  """The coarse-noise keys (shared with the denoising U-Net)."""
  model = config.model
  require(model.noise_std > 0, "model.noise_std", model.noise_std, "a number > 0")
  positive_int(model, "noise_resolution", "model.")
  require(model.noise_resolution <= config.dataset.resolution, "model.noise_resolution",
          model.noise_resolution, f"at most dataset.resolution ({config.dataset.resolution})")
