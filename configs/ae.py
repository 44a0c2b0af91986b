"""Deterministic autoencoder with a dense bottleneck on the built-in FLAIR dataset."""

from brainseg_jax import config as config_lib


def get_config(variant: str | None = None):
  config = config_lib.defaults("ae")
  config.experiment = "ae"
  return config_lib.with_variant(config, variant)
