"""Variational autoencoder with a dense bottleneck on the built-in FLAIR dataset."""

from configs import default


def get_config(variant: str | None = None):
  config = default.get_config()
  config.experiment = "vae"
  config.model.name = "vae"
  # Weight of the KL term against the per-slice sum of squared errors.
  config.model.kl_weight = 1.0
  return default.with_variant(config, variant)
