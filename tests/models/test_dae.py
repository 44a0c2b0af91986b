import jax
import jax.numpy as jnp
import numpy as np

from brainseg_jax.models import dae
from tests.helpers import as_batch


def test_noise_is_coarse():
  """Almost all of the noise's power lies below the coarse grid's frequency."""
  noise = dae.coarse_noise(jax.random.key(0), (4, 128, 128, 1), 0.2, 16)
  power = np.abs(np.fft.fftshift(np.fft.fft2(np.asarray(noise)[..., 0]), axes=(1, 2))) ** 2
  freq = np.fft.fftshift(np.fft.fftfreq(128))
  fy, fx = np.meshgrid(freq, freq, indexing="ij")
  low = (np.abs(fy) <= 8 / 128) & (np.abs(fx) <= 8 / 128)  # within the 16x16 grid's Nyquist
  assert power[:, low].sum() / power.sum() > 0.85
  white = np.asarray(jax.random.normal(jax.random.key(0), (4, 128, 128)))
  white_power = np.abs(np.fft.fftshift(np.fft.fft2(white), axes=(1, 2))) ** 2
  assert white_power[:, low].sum() / white_power.sum() < 0.05
  assert 0.1 < float(jnp.std(noise)) < 0.25


def test_noise_is_reproducible_from_the_seed():
  a = dae.coarse_noise(jax.random.key(3), (2, 32, 32, 1), 0.2, 8)
  b = dae.coarse_noise(jax.random.key(3), (2, 32, 32, 1), 0.2, 8)
  c = dae.coarse_noise(jax.random.key(4), (2, 32, 32, 1), 0.2, 8)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_loss_compares_reconstruction_of_noisy_input_with_clean_input():
  from brainseg_jax.models import ae, layers
  net = ae.AutoEncoder(layers.Architecture(channels=(4, 8), bottleneck="spatial", latent_dim=16,
                                           latent_channels=4, blocks_per_level=1, norm="none"))
  images = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
  params = net.init(jax.random.key(0), images)["params"]
  rng = jax.random.key(5)
  loss, _ = dae.loss_fn(net, params, as_batch(images), rng, noise_std=0.3, noise_resolution=4)
  noisy = images + dae.coarse_noise(rng, images.shape, 0.3, 4)
  recon = net.apply({"params": params}, noisy)
  np.testing.assert_allclose(loss, jnp.sum((recon - images) ** 2) / 2, rtol=1e-5)
