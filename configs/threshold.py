"""Intensity baseline: threshold the normalised FLAIR intensity, nothing trained.

The same evaluation protocol as the models: each threshold flags a fraction
`eval.healthy_fprs` of the healthy validation brain voxels.
"""

from configs import default


def get_config(variant: str | None = None):
  config = default.get_config()
  config.experiment = "threshold"
  config.model.name = "threshold"
  return default.with_variant(config, variant)
