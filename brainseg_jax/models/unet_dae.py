"""Denoising U-Net (Kascenas et al., MIDL 2022): coarse noise inside the brain, loss in it.

The published version of the coarse-noise denoising autoencoder (dae.py has
the autoencoder variant). Three things differ from dae.py, each as in the
paper:
  * the network is a U-Net (unet.py): full-resolution skips keep anatomical
    detail sharp, and the noise stops it from simply copying its input;
  * the noise goes inside the brain only, where anomalies are looked for: the
    background stays exactly zero, so the model is never asked to "denoise" the
    edge of the head into it;
  * the loss counts brain voxels only, and the noise grid is shifted by a random
    offset so its blobs do not always sit on the same pixels.
At test time the clean slice goes in (`reconstruct`), and a lesion, to a model
that has only seen healthy tissue, is one more blob to remove.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections

from brainseg_jax import config as config_lib
from brainseg_jax.errors import UserError, one_of, positive_int, require
from brainseg_jax.models import dae, reconstruction, unet


def shifted_coarse_noise(rng, shape, noise_std: float, noise_resolution: int):
  """dae.coarse_noise, its grid shifted by a random offset in each slice.

  The noise is drawn on one more grid cell per side than the image needs and
  each slice takes its window at a random offset of up to one cell. The paper
  rolls the noise instead, by one offset per batch; a window has no seam where
  rolled noise wraps round, and per-slice offsets decorrelate the slices.
  """
  batch, height, width, channels = shape
  cell_h, cell_w = -(-height // noise_resolution), -(-width // noise_resolution)
  noise_rng, offset_rng = jax.random.split(rng)
  padded = dae.coarse_noise(noise_rng, (batch, height + cell_h, width + cell_w, channels),
                            noise_std, noise_resolution + 1)
  rows = jax.random.randint(offset_rng, (batch,), 0, cell_h)
  cols = jax.random.randint(jax.random.fold_in(offset_rng, 1), (batch,), 0, cell_w)

  def window(noise, row, col):
    return jax.lax.dynamic_slice(noise, (row, col, 0), (height, width, channels))

  return jax.vmap(window)(padded, rows, cols)


# model.slice_noise: how the noise of a 2.5D stack's neighbours relates to the centre slice's.
SLICE_NOISE = {
    "shared": "the centre's noise on every slice of the stack",
    "mixed": "each neighbour's noise rho * the centre's + sqrt(1 - rho^2) * its own, rho drawn "
             "uniformly in [0, 1] per example",
}


def noisy_brain(rng, images, brain_mask, noise_std: float, noise_resolution: int,
                fine_noise_std: float = 0.0, fine_noise_resolution: int = 0,
                slice_blocks: int = 1, slice_noise: str = "shared"):
  """`images` with shifted coarse noise added inside `brain_mask`; untouched outside it.

  With `fine_noise_resolution` > 0 a second, finer noise is added on top: the
  model then also learns to erase blobs the size of small lesions, which the
  coarse grid's blobs (about 14 mm on the template's field) are much larger than.

  `slice_blocks` > 1: 2.5D input, the channels are that many slices' blocks,
  the centre slice in the middle. Noise drawn for each slice alone would tell
  the model that what the neighbours agree on is real, and a lesion runs
  through them. "shared" puts the centre's noise on every slice; "mixed" draws
  the agreement at random, from identical to independent. Neither stops a
  2.5D U-Net from taking the centre's lesion back from its neighbours: both
  lost to the 2D U-Net on every test set (docs/results_small_lesions.md).
  """
  def draw(key, shape):
    noise = shifted_coarse_noise(key, shape, noise_std, noise_resolution)
    if fine_noise_resolution:  # its own key; without it, the coarse noise is as it always was
      noise += shifted_coarse_noise(jax.random.fold_in(key, 1), shape, fine_noise_std,
                                    fine_noise_resolution)
    return noise

  batch, height, width, channels = images.shape
  per_slice = channels // slice_blocks  # channels of one slice
  if slice_blocks == 1 or slice_noise == "shared":
    noise = jnp.tile(draw(rng, (batch, height, width, per_slice)), (1, 1, 1, slice_blocks))
  else:
    centre_rng, own_rng, rho_rng = jax.random.split(rng, 3)
    centre = draw(centre_rng, (batch, height, width, per_slice))
    own = draw(own_rng, images.shape)
    rho = jax.random.uniform(rho_rng, (batch, 1, 1, 1))
    is_centre = (jnp.arange(channels) // per_slice) == slice_blocks // 2
    rho = jnp.where(is_centre, 1.0, rho)
    noise = rho * jnp.tile(centre, (1, 1, 1, slice_blocks)) + jnp.sqrt(1.0 - rho ** 2) * own
  return images + jnp.where(brain_mask, noise, 0.0)


def brain_squared_error(recon, images, brain_mask):
  """The paper's loss: squared error on brain voxels, averaged over all voxels.

  Dividing by the fixed voxel count (not the batch's brain voxels) keeps each
  voxel's weight the same in every batch; blank slices add nothing.
  """
  return jnp.mean(jnp.where(brain_mask, jnp.square(recon - images), 0.0))


def loss_fn(module, params, batch, rng, noise_std=0.2, noise_resolution=16, fine_noise_std=0.0,
            fine_noise_resolution=0, slice_blocks=1, slice_noise="shared"):
  """Reconstruction of the slice noised inside its brain vs the clean slice, in the brain.

  2.5D: every slice of the stack is reconstructed (each in its own brain mask);
  the anomaly map is the centre's (scoring.VolumeScorer).
  """
  images, brain_mask = batch["image"], batch["brain_mask"]
  noisy = noisy_brain(rng, images, brain_mask, noise_std, noise_resolution, fine_noise_std,
                      fine_noise_resolution, slice_blocks, slice_noise)
  loss = brain_squared_error(module.apply({"params": params}, noisy), images, brain_mask)
  return loss, {"loss": loss}


def reconstruct(module, params, images):
  return module.apply({"params": params}, images)


def create_model(config: ml_collections.ConfigDict):
  module = unet.UNet(unet.UNetArchitecture.from_config(config.model))
  loss = functools.partial(loss_fn, module, noise_std=config.model.noise_std,
                           noise_resolution=config.model.noise_resolution,
                           fine_noise_std=config.model.fine_noise_std,
                           fine_noise_resolution=config.model.fine_noise_resolution,
                           slice_blocks=2 * config_lib.context_slices(config) + 1,
                           slice_noise=config.model.slice_noise)
  return reconstruction.make_model("unet_dae", module, loss, functools.partial(reconstruct, module),
                                   config)


# --------------------------------------------------------------------------- config


# Model keys that shape training only: a trained model is scored the same whatever their value, so
# config.model_differences does not compare them. The noise is drawn in training only: scoring
# denoises the clean scan.
TRAINING_ONLY_KEYS = (
    "noise_std", "noise_resolution", "fine_noise_std", "fine_noise_resolution", "slice_noise")


def model_config() -> ml_collections.ConfigDict:
  """The U-Net's keys only: none of the autoencoders' (channels, bottleneck, ...) apply."""
  model = ml_collections.ConfigDict()
  model.name = "unet_dae"
  model.base_width = 16  # features at full resolution, doubled per level (paper: 64)
  model.levels = 4  # resolution levels: 3 halvings, 128 -> 16
  model.norm_groups = 8  # group norm groups; base_width must be a multiple
  # Noise std (intensities are ~[0, 1]) and the side of the grid it is drawn on:
  # 16 across the image, ~8 pixel blobs at 128x128.
  model.noise_std = 0.2
  model.noise_resolution = 16
  # A second, finer noise for small lesions (0: none), e.g. 32 at 64x64: ~7 mm blobs.
  model.fine_noise_std = 0.1
  model.fine_noise_resolution = 0
  # 2.5D (dataset.context_slices > 0): the neighbours' noise against the centre's (SLICE_NOISE).
  model.slice_noise = "shared"
  return model


def smoke(model: ml_collections.ConfigDict) -> None:
  model.base_width = 8
  model.norm_groups = 4  # groups of 2 features at full resolution, as at width 16


def check(config: ml_collections.ConfigDict) -> None:
  model = config.model
  for key in ("base_width", "norm_groups"):
    positive_int(model, key, "model.")
  positive_int(model, "levels", "model.", minimum=2)
  require(model.base_width % model.norm_groups == 0, "model.base_width", model.base_width,
          f"a multiple of model.norm_groups ({model.norm_groups}): group norm splits every "
          "level's features into that many groups")
  halvings = 2 ** (model.levels - 1)
  if config.dataset.resolution % halvings:
    raise UserError(f"dataset.resolution {config.dataset.resolution} is not divisible by "
                    f"2^{model.levels - 1} = {halvings}, the U-Net's downsampling "
                    f"(model.levels = {model.levels}: one halving per level below the first)")
  dae.check_noise(config)
  one_of(model.slice_noise, tuple(SLICE_NOISE), "model.slice_noise")
  positive_int(model, "fine_noise_resolution", "model.", minimum=0)
  if model.fine_noise_resolution:
    require(model.fine_noise_std > 0, "model.fine_noise_std", model.fine_noise_std,
            "a number > 0")
    require(model.noise_resolution < model.fine_noise_resolution <= config.dataset.resolution,
            "model.fine_noise_resolution", model.fine_noise_resolution,
            f"finer than model.noise_resolution ({model.noise_resolution}) and at most "
            f"dataset.resolution ({config.dataset.resolution})")
