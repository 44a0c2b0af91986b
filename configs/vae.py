"""Variational autoencoder with a dense bottleneck on the built-in FLAIR dataset."""

from brainseg_jax import config as config_lib


def get_config(variant: str | None = None):
  config = config_lib.defaults("vae")
  config.experiment = "vae"
  return config_lib.with_variant(config, variant)
