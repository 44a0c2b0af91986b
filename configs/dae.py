"""Denoising autoencoder with coarse noise (Kascenas et al. 2022) on the built-in FLAIR dataset.

A spatial bottleneck keeps anatomical detail; the coarse-noise objective
stops it from learning the identity, so lesions are "denoised" away.
"""

from configs import default


def get_config(variant: str | None = None):
  config = default.get_config()
  config.experiment = "dae"
  config.model.name = "dae"
  config.model.bottleneck = "spatial"
  config.model.latent_channels = 64
  # Noise std (intensities are ~[0, 1]) and the side of the grid it is drawn on
  # before bilinear upsampling: 16 on a 128 image makes blobs of ~8 pixels.
  config.model.noise_std = 0.2
  config.model.noise_resolution = 16
  config = default.with_variant(config, variant)
  if variant == "smoke":
    config.model.noise_resolution = 8
  return config
