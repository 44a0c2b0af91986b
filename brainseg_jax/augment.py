"""Intensity augmentation of training slices: another scanner's look, drawn at random.

A model trained on one site's healthy slices learns that site's contrast,
brightness curve, bias field, noise and sharpness; a scan from another site
then differs from everything it has seen, everywhere, and the anomaly map
lights up on healthy tissue. Drawing those differences at random during
training teaches the model to reproduce any plausible version of a healthy
slice, so that what it still cannot reproduce is anatomy, not acquisition.

Each slice draws, independently and each with probability `probability`:
  * gamma: x -> x ** g, log g uniform in [-log(gamma), log(gamma)]
    (the brightness curve; x is ~[0, 1] after normalisation);
  * contrast: (x - m) * c + m, c uniform in [1 - contrast, 1 + contrast],
    m the slice's mean brain intensity;
  * bias field: x * exp(b), b a smooth field (a 4x4 grid of N(0, bias_std)
    values, bilinearly resized) - the slow shading of receive coils;
  * blur: a Gaussian of sigma uniform in [0, blur_sigma] pixels;
  * noise: N(0, s) with s uniform in [0, noise_std].
Only brain voxels change; the background stays exactly zero. The target of
the reconstruction is the augmented slice itself: augmentation changes what a
healthy slice may look like, not what the model is asked to return.
Runs inside the jitted train step, on the device, from the step's key.
"""

import jax
import jax.numpy as jnp
import ml_collections

from brainseg_jax.errors import require

_BIAS_GRID = 4


def config() -> ml_collections.ConfigDict:
  """The `augment` block of an experiment config (brainseg_jax/config.py): off by default."""
  augment = ml_collections.ConfigDict()
  augment.intensity = False
  augment.probability = 0.5  # of each transform, per slice
  augment.gamma = 1.5  # log-uniform in [1/gamma, gamma]
  augment.contrast = 0.2
  augment.bias_std = 0.15
  augment.blur_sigma = 1.0  # pixels
  augment.noise_std = 0.03
  return augment


def check(augment: ml_collections.ConfigDict) -> None:
  require(0 <= augment.probability <= 1, "augment.probability", augment.probability,
          "a probability in [0, 1]")
  require(augment.gamma >= 1, "augment.gamma", augment.gamma, "a number >= 1 (1: no gamma)")
  require(0 <= augment.contrast < 1, "augment.contrast", augment.contrast,
          "a number in [0, 1)")
  for key in ("bias_std", "blur_sigma", "noise_std"):
    require(augment[key] >= 0, f"augment.{key}", augment[key], "a number >= 0")


def _gaussian_blur(images, sigma):
  """Each slice of (B, H, W, C) blurred by its own sigma (B,), separably, 9 taps."""
  taps = jnp.arange(-4, 5, dtype=images.dtype)
  weights = jnp.exp(-0.5 * jnp.square(taps[None] / jnp.maximum(sigma[:, None], 1e-3)))
  weights = weights / weights.sum(axis=1, keepdims=True)  # (B, 9); sigma ~ 0: a delta

  def blur_one(image, w):  # (H, W, C), (9,)
    padded = jnp.pad(image, ((4, 4), (0, 0), (0, 0)), mode="edge")
    image = sum(w[i] * padded[i:i + image.shape[0]] for i in range(9))
    padded = jnp.pad(image, ((0, 0), (4, 4), (0, 0)), mode="edge")
    return sum(w[i] * padded[:, i:i + image.shape[1]] for i in range(9))

  return jax.vmap(blur_one)(images, weights)


def _bias_field(rng, shape, std):
  batch, height, width, channels = shape
  grid = std * jax.random.normal(rng, (batch, _BIAS_GRID, _BIAS_GRID, 1))
  return jnp.exp(jax.image.resize(grid, (batch, height, width, 1), "bilinear"))


def intensity(rng, images, brain_mask, augment: ml_collections.ConfigDict):
  """`images` (B, H, W, C) with random intensity transforms inside `brain_mask`."""
  batch = images.shape[0]
  keys = jax.random.split(rng, 11)
  brain = brain_mask.astype(images.dtype)

  def chosen(key):  # (B, 1, 1, 1): which slices take this transform
    return jax.random.bernoulli(key, augment.probability, (batch, 1, 1, 1))

  def uniform(key, low, high):
    return jax.random.uniform(key, (batch, 1, 1, 1), images.dtype, low, high)

  x = jnp.clip(images, 0.0, None)
  log_gamma = jnp.log(augment.gamma)
  gamma = jnp.exp(uniform(keys[0], -log_gamma, log_gamma))
  x = jnp.where(chosen(keys[1]), jnp.power(x + 1e-6, gamma), x)
  mean = (x * brain).sum(axis=(1, 2, 3), keepdims=True) / jnp.maximum(
      brain.sum(axis=(1, 2, 3), keepdims=True), 1.0)
  contrast = uniform(keys[2], 1 - augment.contrast, 1 + augment.contrast)
  x = jnp.where(chosen(keys[3]), (x - mean) * contrast + mean, x)
  x = jnp.where(chosen(keys[4]), x * _bias_field(keys[5], x.shape, augment.bias_std), x)
  sigma = uniform(keys[6], 0.0, augment.blur_sigma)[:, 0, 0, 0]
  x = jnp.where(chosen(keys[7]), _gaussian_blur(x * brain, sigma), x)
  noise_std = uniform(keys[8], 0.0, augment.noise_std)
  x = jnp.where(chosen(keys[9]), x + noise_std * jax.random.normal(keys[10], x.shape), x)
  return jnp.where(brain_mask, x, images)
