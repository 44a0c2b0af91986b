"""Denoising autoencoder with coarse noise (Kascenas et al. 2022) on the built-in FLAIR dataset.

A spatial bottleneck keeps anatomical detail; the coarse-noise objective
stops it from learning the identity, so lesions are "denoised" away. Its keys
and their defaults: brainseg_jax/models/dae.py.
"""

from brainseg_jax import config as config_lib


def get_config(variant: str | None = None):
  config = config_lib.defaults("dae")
  config.experiment = "dae"
  return config_lib.with_variant(config, variant)
