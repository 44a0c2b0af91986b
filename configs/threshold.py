"""Intensity baseline: threshold the normalised FLAIR intensity, nothing trained.

The same evaluation protocol as the models: each threshold flags a fraction
`eval.healthy_fprs` of the healthy validation brain voxels.
"""

from brainseg_jax import config as config_lib


def get_config(variant: str | None = None):
  config = config_lib.defaults("threshold")
  config.experiment = "threshold"
  return config_lib.with_variant(config, variant)
