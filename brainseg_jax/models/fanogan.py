"""f-AnoGAN (Schlegl et al., Medical Image Analysis 2019).

Two stages, one config, one step counter:
  1. steps [0, gan_steps): a Wasserstein GAN with gradient penalty learns to
     generate healthy slices. Every step updates the critic; every
     `critic_steps`-th step also updates the generator (5 critic updates per
     generator update, as in WGAN-GP).
  2. steps [gan_steps, num_train_steps): the "izif" encoder learns to map a
     slice to the latent code the frozen generator turns back into it; loss =
     image MSE + kappa * MSE of the frozen critic's features.
The train loop picks the stage from its step counter (`stage_of`) and passes
it as a static argument: three small programs (critic step, critic + generator
step, encoder step) compile once each. A `lax.cond` between them inside one
program was measured 15x slower on XLA:CPU. Training resumes from a checkpoint
in either stage.

Anomaly map: |x - G(E(x))|. The per-slice anomaly score adds the critic
feature residual (`Model.slice_score`).
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from brainseg_jax import config as config_lib
from brainseg_jax.errors import positive_int, require
from brainseg_jax.models.base import Model


def _example_layer_norm(x):
  """Layer norm over all of an example's features (rows, columns and channels)."""
  return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1)(x)


def _with_coordinates(images):
  """Appends each pixel's row and column (in [-1, 1]) as two channels.

  Blank slices (above and below the brain) are constant images; through
  convolutions they stay constant, and every layer norm then divides by
  sqrt(epsilon): the critic's input gradient reached norms of 1e3-1e10 there
  and the gradient penalty spiked to 1e5-1e6 in training. With coordinate
  channels no feature map of the critic is constant, so the norms stay finite.
  """
  b, h, w, _ = images.shape
  rows, cols = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
  coords = jnp.broadcast_to(jnp.stack([rows, cols], -1), (b, h, w, 2)).astype(images.dtype)
  return jnp.concatenate([images, coords], axis=-1)


class ResidualBlock(nn.Module):
  """Two 3x3 convs with a (1x1-projected) skip; optionally halves or doubles the size.

  The critic uses layer norm (batch norm would couple examples and break the
  per-example gradient penalty); the generator uses none.
  """

  features: int
  resample: str = "none"  # "down", "up" or "none"
  layer_norm: bool = False

  def _resample(self, x):
    if self.resample == "up":
      b, h, w, c = x.shape
      return jax.image.resize(x, (b, 2 * h, 2 * w, c), method="nearest")
    if self.resample == "down":
      return nn.avg_pool(x, (2, 2), strides=(2, 2))
    return x

  @nn.compact
  def __call__(self, x):
    skip = nn.Conv(self.features, (1, 1))(self._resample(x))
    h = x
    if self.layer_norm:
      h = _example_layer_norm(h)
    h = nn.Conv(self.features, (3, 3))(nn.leaky_relu(h, 0.2))
    h = self._resample(h)
    if self.layer_norm:
      h = _example_layer_norm(h)
    h = nn.Conv(self.features, (3, 3))(nn.leaky_relu(h, 0.2))
    return skip + h


class Generator(nn.Module):
  """Latent z -> slice: a 4x4 map, then one upsampling residual block per level."""

  channels: Sequence[int]  # highest resolution first, like the encoders
  image_size: int
  image_channels: int = 1  # one per modality

  @nn.compact
  def __call__(self, z):
    levels = _levels(self.image_size)
    widths = _widths(self.channels, levels)
    x = nn.Dense(4 * 4 * widths[-1])(z).reshape(z.shape[0], 4, 4, widths[-1])
    for features in reversed(widths):
      x = ResidualBlock(features, "up")(x)
    return nn.Conv(self.image_channels, (3, 3))(nn.leaky_relu(x, 0.2))


class Critic(nn.Module):
  """Slice -> (Wasserstein score, features); layer norm, no batch norm."""

  channels: Sequence[int]

  @nn.compact
  def __call__(self, x):
    levels = _levels(x.shape[1])
    x = nn.Conv(_widths(self.channels, levels)[0], (3, 3))(_with_coordinates(x))
    for features in _widths(self.channels, levels):
      x = ResidualBlock(features, "down", layer_norm=True)(x)
    features = nn.leaky_relu(x, 0.2).reshape(x.shape[0], -1)
    return nn.Dense(1)(features)[:, 0], features


class Encoder(nn.Module):
  """Slice -> latent z (the izif encoder)."""

  channels: Sequence[int]
  latent_dim: int

  @nn.compact
  def __call__(self, x):
    levels = _levels(x.shape[1])
    x = nn.Conv(_widths(self.channels, levels)[0], (3, 3))(x)
    for features in _widths(self.channels, levels):
      x = ResidualBlock(features, "down")(x)
    return nn.Dense(self.latent_dim)(nn.leaky_relu(x, 0.2).reshape(x.shape[0], -1))


def _levels(image_size: int) -> int:
  """Resolution halvings from the image down to 4x4."""
  return int(math.log2(image_size // 4))


def _widths(channels, levels):
  """One width per level: `channels`, extended with its last entry if there are more levels."""
  channels = tuple(channels)
  return channels[:levels] + (channels[-1],) * max(0, levels - len(channels))


@flax.struct.dataclass
class FAnoGANState:
  step: jax.Array
  generator: train_state.TrainState
  critic: train_state.TrainState
  encoder: train_state.TrainState


def gradient_penalty(critic_score, interpolates):
  """Mean over examples of (||grad_x critic(x)|| - 1)^2 at the interpolates.

  The norm runs over all of an example's pixels and channels (Gulrajani et
  al.); `critic_score` maps a batch to one score per example.
  """
  grads = jax.grad(lambda x: jnp.sum(critic_score(x)))(interpolates)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))


class FAnoGAN:
  """The three networks, their two training stages and the scoring, as pure functions."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config.model
    self.seed = config.seed
    channels = tuple(self.config.channels)
    size, _, image_channels = config_lib.image_shape(config)
    self.generator = Generator(channels, size, image_channels)
    self.critic = Critic(channels)
    self.encoder = Encoder(channels, self.config.latent_dim)
    betas = dict(b1=self.config.adam_b1, b2=self.config.adam_b2)
    self.gan_tx = optax.adam(self.config.gan_learning_rate, **betas)
    self.encoder_tx = optax.adam(self.config.encoder_learning_rate, **betas)

  def create_state(self, rng, image_shape) -> FAnoGANState:
    g_rng, c_rng, e_rng = jax.random.split(rng, 3)
    images = jnp.zeros((1, *image_shape), jnp.float32)
    z = jnp.zeros((1, self.config.latent_dim), jnp.float32)

    def new(module, tx, rng, x):
      return train_state.TrainState.create(apply_fn=module.apply,
                                           params=module.init(rng, x)["params"], tx=tx)

    return FAnoGANState(step=jnp.asarray(0, jnp.int32),
                        generator=new(self.generator, self.gan_tx, g_rng, z),
                        critic=new(self.critic, self.gan_tx, c_rng, images),
                        encoder=new(self.encoder, self.encoder_tx, e_rng, images))

  def generate(self, params, z):
    return self.generator.apply({"params": params}, z)

  def critique(self, params, images):
    """(score per slice, feature vector per slice)."""
    return self.critic.apply({"params": params}, images)

  def encode(self, params, images):
    return self.encoder.apply({"params": params}, images)

  def critic_loss(self, critic_params, generator_params, images, rng):
    """-(Wasserstein estimate) + lambda x gradient penalty, on one batch."""
    z_rng, eps_rng = jax.random.split(rng)
    z = jax.random.normal(z_rng, (images.shape[0], self.config.latent_dim))
    fake = self.generate(generator_params, z)
    eps = jax.random.uniform(eps_rng, (images.shape[0], 1, 1, 1))
    interpolates = eps * images + (1.0 - eps) * fake
    wasserstein = (jnp.mean(self.critique(critic_params, images)[0])
                   - jnp.mean(self.critique(critic_params, fake)[0]))
    penalty = gradient_penalty(lambda x: self.critique(critic_params, x)[0], interpolates)
    loss = -wasserstein + self.config.gradient_penalty_weight * penalty
    return loss, {"wasserstein": wasserstein, "gradient_penalty": penalty}

  def generator_loss(self, generator_params, critic_params, batch, rng):
    fake = self.generate(generator_params, jax.random.normal(rng, (batch, self.config.latent_dim)))
    return -jnp.mean(self.critique(critic_params, fake)[0])

  def encoder_loss(self, encoder_params, generator_params, critic_params, images):
    """izif: image MSE plus kappa x MSE of the critic's features, x vs G(E(x))."""
    recon = self.generate(generator_params, self.encode(encoder_params, images))
    image_term = jnp.mean(jnp.square(recon - images))
    feature_term = jnp.mean(jnp.square(self.critique(critic_params, recon)[1]
                                       - self.critique(critic_params, images)[1]))
    return image_term + self.config.feature_weight * feature_term

  def gan_stage(self, state: FAnoGANState, images, rng, update_generator: bool):
    """A critic update and, if `update_generator`, then a generator update."""
    c_rng, g_rng = jax.random.split(rng)
    (c_loss, c_metrics), c_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
        state.critic.params, state.generator.params, images, c_rng)
    critic_state = state.critic.apply_gradients(grads=c_grads)
    generator_state, g_loss = state.generator, jnp.zeros((), jnp.float32)
    if update_generator:
      g_loss, g_grads = jax.value_and_grad(self.generator_loss)(
          state.generator.params, critic_state.params, images.shape[0], g_rng)
      generator_state = state.generator.apply_gradients(grads=g_grads)
    metrics = {"loss": c_loss, "critic_loss": c_loss, "generator_loss": g_loss,
               "encoder_loss": jnp.zeros(()), **c_metrics}
    return state.replace(generator=generator_state, critic=critic_state), metrics

  def encoder_stage(self, state: FAnoGANState, images, rng):
    """An encoder update; generator and critic are frozen (not even passed to the optimiser)."""
    del rng
    loss, grads = jax.value_and_grad(self.encoder_loss)(
        state.encoder.params, state.generator.params, state.critic.params, images)
    zero = jnp.zeros((), jnp.float32)
    metrics = {"loss": loss, "critic_loss": zero, "generator_loss": zero, "encoder_loss": loss,
               "wasserstein": zero, "gradient_penalty": zero}
    return state.replace(encoder=state.encoder.apply_gradients(grads=grads)), metrics

  CRITIC, CRITIC_AND_GENERATOR, ENCODER = 0, 1, 2

  def stage_of(self, step: int) -> int:
    """What the update from `step` (the state's step count before it) trains."""
    if step >= self.config.gan_steps:
      return self.ENCODER
    if step % self.config.critic_steps == self.config.critic_steps - 1:
      return self.CRITIC_AND_GENERATOR
    return self.CRITIC

  def train_step(self, state: FAnoGANState, batch, stage: int = 0):
    """One update of the given stage (static: each stage compiles to its own program).

    Only the batch's "image" is used: the critic judges whole slices.
    """
    images = batch["image"]
    rng = jax.random.fold_in(jax.random.key(self.seed), state.step)
    if stage == self.ENCODER:
      state, metrics = self.encoder_stage(state, images, rng)
    else:
      state, metrics = self.gan_stage(state, images, rng, stage == self.CRITIC_AND_GENERATOR)
    return state.replace(step=state.step + 1), metrics

  def reconstruct(self, state: FAnoGANState, images):
    return self.generate(state.generator.params, self.encode(state.encoder.params, images))

  def slice_score(self, state: FAnoGANState, images):
    """Per-slice anomaly score: image MSE + kappa x critic-feature MSE of x vs G(E(x))."""
    recon = self.reconstruct(state, images)
    image_term = jnp.mean(jnp.square(recon - images), axis=(1, 2, 3))
    real = self.critique(state.critic.params, images)[1]
    fake = self.critique(state.critic.params, recon)[1]
    return image_term + self.config.feature_weight * jnp.mean(jnp.square(fake - real), axis=-1)


def create_model(config: ml_collections.ConfigDict) -> Model:
  """f-AnoGAN as a `Model`: both training stages behind one train step."""
  gan = FAnoGAN(config)
  return Model("fanogan", gan.create_state, gan.train_step, gan.reconstruct,
               slice_score=gan.slice_score, stage_of=gan.stage_of)


# --------------------------------------------------------------------------- config


# Model keys that shape training only: a trained model is scored the same whatever their value, so
# config.model_differences does not compare them. The stages' schedules and optimisers;
# feature_weight is not one: slice_score uses it.
TRAINING_ONLY_KEYS = ("gan_steps", "critic_steps", "gradient_penalty_weight", "gan_learning_rate",
                      "encoder_learning_rate", "adam_b1", "adam_b2")


def model_config() -> ml_collections.ConfigDict:
  """The three networks' sizes and the two stages' schedules and optimisers."""
  model = ml_collections.ConfigDict()
  model.name = "fanogan"
  model.channels = (16, 32, 64, 128)  # per level, 4x4 up to the image size
  model.latent_dim = 128
  # Stage 1, WGAN-GP: steps [0, gan_steps); stage 2, izif encoder: the rest.
  model.gan_steps = 2000
  model.critic_steps = 5  # critic updates per generator update
  model.gradient_penalty_weight = 10.0
  model.gan_learning_rate = 1e-4
  model.encoder_learning_rate = 1e-4
  model.adam_b1 = 0.0
  model.adam_b2 = 0.9
  model.feature_weight = 1.0  # kappa: weight of the critic-feature residual
  return model


def smoke(model: ml_collections.ConfigDict) -> None:
  model.channels = (8, 16, 32)
  model.latent_dim = 32
  model.gan_steps = 40


def check(config: ml_collections.ConfigDict) -> None:
  model = config.model
  channels = tuple(model.channels)
  require(len(channels) > 0 and all(isinstance(c, int) and c > 0 for c in channels),
          "model.channels", channels, "a non-empty tuple of positive integers")
  size = config.dataset.resolution
  require(size >= 8 and size & (size - 1) == 0, "dataset.resolution", size,
          "a power of two >= 8 for f-AnoGAN (its generator doubles a 4x4 map up to it)")
  for key in ("critic_steps", "latent_dim"):
    positive_int(model, key, "model.")
  require(0 < model.gan_steps < config.num_train_steps, "model.gan_steps", model.gan_steps,
          f"in (0, num_train_steps = {config.num_train_steps}): the encoder stage needs steps")
  for key in ("gan_learning_rate", "encoder_learning_rate"):
    require(model[key] > 0, f"model.{key}", model[key], "a number > 0")
