"""f-AnoGAN: WGAN-GP (generator + critic), then the izif encoder, in one run."""

from configs import default


def get_config(variant: str | None = None):
  config = default.get_config()
  config.experiment = "fanogan"
  config.model.name = "fanogan"
  config.model.channels = (16, 32, 64, 128)  # per level, 4x4 up to the image size
  config.model.latent_dim = 128
  # Stage 1, WGAN-GP: steps [0, gan_steps); stage 2, izif encoder: the rest.
  config.model.gan_steps = 2000
  config.num_train_steps = 2800
  config.model.critic_steps = 5  # critic updates per generator update
  config.model.gradient_penalty_weight = 10.0
  config.model.gan_learning_rate = 1e-4
  config.model.encoder_learning_rate = 1e-4
  config.model.adam_b1 = 0.0
  config.model.adam_b2 = 0.9
  config.model.feature_weight = 1.0  # kappa: weight of the critic-feature residual
  config = default.with_variant(config, variant)
  if variant == "smoke":
    config.model.gan_steps = 40
    config.model.latent_dim = 32
  return config
