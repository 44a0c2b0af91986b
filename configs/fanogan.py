"""f-AnoGAN: WGAN-GP (generator + critic), then the izif encoder, in one run.

Its keys and their defaults: brainseg_jax/models/fanogan.py (stage 1 runs to
model.gan_steps, stage 2 the rest of num_train_steps).
"""

from brainseg_jax import config as config_lib


def get_config(variant: str | None = None):
  config = config_lib.defaults("fanogan")
  config.experiment = "fanogan"
  config.num_train_steps = 2800
  return config_lib.with_variant(config, variant)
