"""Deterministic autoencoder with a dense bottleneck on the built-in FLAIR dataset."""

from configs import default


def get_config(variant: str | None = None):
  config = default.get_config()
  config.experiment = "ae"
  config.model.name = "ae"
  return default.with_variant(config, variant)
