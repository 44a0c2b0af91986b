import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brainseg_jax import parallel, train
from brainseg_jax.models import create_train_state, fanogan
from configs import fanogan as fanogan_config
from tests.helpers import as_batch

pytestmark = pytest.mark.slow  # compiles three networks


def tiny_config():
  config = fanogan_config.get_config("smoke")
  config.dataset.resolution = 16
  config.model.channels = (8, 16)
  config.model.latent_dim = 8
  config.model.gan_steps = 6
  config.num_train_steps = 10
  return config


def smooth_batch(size=8, resolution=16):
  yy, xx = np.mgrid[:resolution, :resolution] / resolution
  rng = np.random.default_rng(0)
  return jnp.asarray(np.stack([np.exp(-((xx - rng.random()) ** 2 + (yy - rng.random()) ** 2) * 8)
                               for _ in range(size)])[..., None], jnp.float32)


def test_gradient_penalty_hand_computed():
  # Linear critic: score = 0.5 * sum(x) over 4x4x1 pixels -> gradient 0.5 everywhere,
  # norm over the example's 16 values = 0.5 * 4 = 2 -> penalty (2 - 1)^2 = 1.
  x = jnp.ones((3, 4, 4, 1))
  penalty = fanogan.gradient_penalty(lambda v: 0.5 * jnp.sum(v, axis=(1, 2, 3)), x)
  assert float(penalty) == pytest.approx(1.0, rel=1e-5)
  # A per-pixel norm would see 0.5 -> 0.25: the norm must span the whole example.
  unit = fanogan.gradient_penalty(lambda v: 0.25 * jnp.sum(v, axis=(1, 2, 3)), x)
  assert float(unit) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def gan():
  return fanogan.FAnoGAN(tiny_config())


@pytest.fixture(scope="module")
def train_step(gan):
  """One compiled step shared by the tests below (same shapes: one compilation)."""
  step = jax.jit(gan.train_step, static_argnames="stage")
  return lambda state, images: step(state, as_batch(images), stage=gan.stage_of(int(state.step)))


def test_critic_step_raises_the_wasserstein_estimate_on_a_fixed_batch():
  config = tiny_config()
  # Without the penalty the critic's only objective is the estimate itself.
  config.model.gradient_penalty_weight = 0.0
  gan = fanogan.FAnoGAN(config)
  state = gan.create_state(jax.random.key(0), (16, 16, 1))
  images, rng = smooth_batch(), jax.random.key(7)
  estimate = jax.jit(lambda critic_params: gan.critic_loss(
      critic_params, state.generator.params, images, rng)[1]["wasserstein"])
  before = float(estimate(state.critic.params))
  state, _ = jax.jit(gan.gan_stage, static_argnums=3)(state, images, rng, False)  # critic only
  assert float(estimate(state.critic.params)) > before


def test_generator_updates_once_every_critic_steps(gan, train_step):
  state = gan.create_state(jax.random.key(0), (16, 16, 1))
  images = smooth_batch()
  step = train_step
  initial = jax.device_get(state.generator.params)
  for _ in range(4):  # steps 0..3: critic only
    state, metrics = step(state, images)
  jax.tree.map(np.testing.assert_array_equal, initial, jax.device_get(state.generator.params))
  state, metrics = step(state, images)  # step 4 = critic_steps - 1
  assert float(metrics["generator_loss"]) != 0.0
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), initial,
                         jax.device_get(state.generator.params))
  assert all(jax.tree.leaves(changed))


def test_encoder_stage_leaves_generator_and_critic_bit_identical(gan, train_step):
  state = gan.create_state(jax.random.key(0), (16, 16, 1))
  state = state.replace(step=jnp.asarray(gan.config.gan_steps, jnp.int32))
  frozen = jax.device_get((state.generator, state.critic))
  encoder_before = jax.device_get(state.encoder.params)
  step = train_step
  losses = []
  for _ in range(4):
    state, metrics = step(state, smooth_batch())
    losses.append(float(metrics["encoder_loss"]))
  jax.tree.map(np.testing.assert_array_equal, frozen,
               jax.device_get((state.generator, state.critic)))
  assert not np.array_equal(jax.device_get(state.encoder.params["Dense_0"]["kernel"]),
                            encoder_before["Dense_0"]["kernel"])
  assert losses[-1] < losses[0]


def test_multi_device_steps_equal_single_device_steps():
  config = tiny_config()
  model = fanogan.create_model(config)
  images = smooth_batch()
  results = {}
  for n in (1, 4):
    mesh = parallel.data_mesh(jax.devices()[:n])
    state = jax.device_put(create_train_state(model, config), parallel.replicated(mesh))
    step = train.jit_train_step(model, mesh)
    for i in range(config.model.gan_steps + 2):  # through both stages
      state, _ = step(state, jax.device_put(as_batch(images), parallel.batch_sharded(mesh)),
                      model.stage_of(i))
    results[n] = jax.device_get(state)
  # Adversarial updates amplify float reduction-order differences a little.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4),
               results[1], results[4])


def test_slice_score_adds_the_feature_term(gan):
  state = gan.create_state(jax.random.key(0), (16, 16, 1))
  images = smooth_batch(4)
  recon = gan.reconstruct(state, images)
  image_term = jnp.mean((recon - images) ** 2, axis=(1, 2, 3))
  scores = gan.slice_score(state, images)
  assert scores.shape == (4,)
  assert np.all(np.asarray(scores) > np.asarray(image_term))


def test_critic_gradient_stays_bounded_on_blank_slices():
  """Blank slices (outside the brain) must not blow up the gradient penalty."""
  config = tiny_config()
  config.dataset.resolution = 32  # several layer norms in a row, as in the real critic
  model = fanogan.FAnoGAN(config)
  state = model.create_state(jax.random.key(0), (32, 32, 1))

  def input_gradient_norms(images):
    grads = jax.grad(lambda x: jnp.sum(model.critique(state.critic.params, x)[0]))(images)
    return np.linalg.norm(np.asarray(grads).reshape(len(images), -1), axis=-1)

  blank = input_gradient_norms(jnp.zeros((2, 32, 32, 1)))
  textured = input_gradient_norms(smooth_batch(2, 32))
  assert np.all(np.isfinite(blank))
  assert blank.max() < 10 * textured.max(), (blank, textured)
