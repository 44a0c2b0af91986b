"""The denoising U-Net: its skips, where its noise lands, what its loss counts.

Its :smoke run trains and must learn in tests/test_commands.py.
"""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brainseg_jax import config as config_lib
from brainseg_jax import scoring
from brainseg_jax.datasets import input_pipeline
from brainseg_jax.errors import UserError
from brainseg_jax.models import create_model, create_train_state, dae, unet, unet_dae
from configs import unet_dae as unet_dae_config
from tests.helpers import as_batch

pytestmark = pytest.mark.slow  # compiles the U-Net


def disc_mask(batch, size, radius=0.35):
  """A centred disc "brain" in every slice, (batch, size, size, 1) bool."""
  yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
  disc = (yy ** 2 + xx ** 2 < (radius * size) ** 2)[None, :, :, None]
  return np.broadcast_to(disc, (batch, size, size, 1)).copy()


@pytest.fixture(scope="module")
def net_and_params():
  net = unet.UNet(unet.UNetArchitecture(base_width=8, levels=4, norm_groups=4))
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
  return net, net.init(jax.random.key(0), images)["params"], images


def test_reconstruction_has_input_shape():
  config = unet_dae_config.get_config("smoke")
  model = create_model(config)
  state = model.create_state(jax.random.key(0), (32, 32, 1))
  assert model.reconstruct(state, jnp.ones((3, 32, 32, 1))).shape == (3, 32, 32, 1)
  assert {k for k in state.params if k.startswith("Up_")} == {"Up_0", "Up_1", "Up_2"}


@pytest.mark.parametrize("up", ["Up_0", "Up_1", "Up_2"])
def test_every_skip_reaches_the_output(net_and_params, up):
  """Zeroing the features one skip hands to the decoder changes the reconstruction."""
  net, params, images = net_and_params
  intercepted = []

  def drop_skip(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and context.module.name == up:
      x, skip = args
      assert skip.shape[:-1] == (x.shape[0], 2 * x.shape[1], 2 * x.shape[2])
      intercepted.append(skip.shape)
      return next_fun(x, jnp.zeros_like(skip), **kwargs)
    return next_fun(*args, **kwargs)

  output = net.apply({"params": params}, images)
  with nn.intercept_methods(drop_skip):
    without_skip = net.apply({"params": params}, images)
  assert len(intercepted) == 1
  assert float(jnp.max(jnp.abs(output - without_skip))) > 1e-3


def test_noise_lands_only_inside_the_brain():
  images = np.random.default_rng(0).random((4, 64, 64, 1)).astype(np.float32)
  brain = disc_mask(4, 64)
  noisy = unet_dae.noisy_brain(jax.random.key(0), images, brain, 0.2, 16)
  difference = np.asarray(noisy) - images
  assert np.all(difference[~brain] == 0.0)  # exactly: the background is left alone
  assert np.mean(difference[brain] != 0.0) > 0.99
  assert 0.1 < difference[brain].std() < 0.3


def test_fine_noise_adds_small_blobs_and_leaves_the_coarse_noise_alone():
  images = np.zeros((4, 64, 64, 1), np.float32)
  brain = disc_mask(4, 64)
  coarse = np.asarray(unet_dae.noisy_brain(jax.random.key(0), images, brain, 0.2, 16))
  both = np.asarray(unet_dae.noisy_brain(jax.random.key(0), images, brain, 0.2, 16, 0.1, 32))
  fine = (both - coarse)[brain]
  assert np.all((both - coarse)[~brain] == 0.0)
  assert 0.05 < fine.std() < 0.15
  # finer: neighbouring pixels two apart differ more than in the coarse noise
  assert (np.abs(np.diff(both - coarse, n=2, axis=1)).mean()
          > 2 * np.abs(np.diff(coarse, n=2, axis=1)).mean() * 0.1 / 0.2)


def _stack_brain(batch):
  brain = np.broadcast_to(disc_mask(batch, 64), (batch, 64, 64, 3)).copy()
  brain[..., 0] &= np.arange(64)[None, :, None] < 40  # a neighbour with less brain
  return brain


def test_shared_2_5d_noise_is_the_same_blob_on_every_slice_of_the_stack():
  images, brain = np.zeros((2, 64, 64, 3), np.float32), _stack_brain(2)
  noise = np.asarray(unet_dae.noisy_brain(jax.random.key(0), images, brain, 0.2, 16,
                                          slice_blocks=3, slice_noise="shared"))
  np.testing.assert_array_equal(noise[..., 1], noise[..., 2])
  both = brain[..., 0]
  np.testing.assert_array_equal(noise[..., 0][both], noise[..., 1][both])
  assert np.all(noise[..., 0][~brain[..., 0]] == 0.0)  # each slice's own brain
  assert noise[..., 1][both].std() > 0.1


def test_mixed_2_5d_noise_agrees_with_the_centre_by_a_random_amount():
  """Neither agreement nor disagreement with the neighbours may mark noise."""
  images, brain = np.zeros((64, 64, 64, 3), np.float32), _stack_brain(64)
  noise = np.asarray(unet_dae.noisy_brain(jax.random.key(0), images, brain, 0.2, 16,
                                          slice_blocks=3, slice_noise="mixed"))
  centre = noise[..., 1]
  assert np.all(noise[..., 0][~brain[..., 0]] == 0.0)
  inside = brain[..., 2]
  agreement = [np.corrcoef(centre[i][inside[i]], noise[i, ..., 2][inside[i]])[0, 1]
               for i in range(64)]
  assert min(agreement) < 0.3 and max(agreement) > 0.9
  strength = [noise[..., c][brain[..., c]].std() for c in range(3)]
  assert max(strength) < 1.2 * min(strength)  # every slice's noise as strong as the centre's


def test_a_2_5d_model_reconstructs_the_stack_and_scores_the_centre():
  config = unet_dae_config.get_config("smoke")
  config.dataset.resolution, config.dataset.context_slices = 32, 1
  model = create_model(config)
  state = create_train_state(model, config)
  scorer = scoring.scorer_for(model, config)
  volume = np.random.default_rng(0).random((5, 32, 32, 1)).astype(np.float32)
  brain = np.ones((5, 32, 32, 1), bool)
  recon, anomaly = scorer(scorer.place(state), volume, brain)
  assert recon.shape == anomaly.shape == (5, 32, 32, 1)
  stacked = model.reconstruct(state, input_pipeline.context_stack(volume, 1))
  np.testing.assert_allclose(recon, stacked[..., 1:2], atol=1e-5)
  np.testing.assert_allclose(anomaly, np.maximum(volume - recon, 0.0), atol=1e-5)


def test_fine_noise_must_be_finer():
  config = config_lib.defaults("unet_dae")
  config.dataset.resolution = 64
  config.model.fine_noise_resolution = 8
  with pytest.raises(UserError, match="model.fine_noise_resolution"):
    config_lib.check(config)


def _knot_phases(noise, axis, cell):
  """Per slice, the pixel phases (mod `cell`) where bilinear noise has its grid's knots.

  Between knots bilinear noise is linear along a row, so its second difference
  is non-zero only next to a knot of the coarse grid.
  """
  second = np.abs(np.diff(np.asarray(noise)[..., 0], n=2, axis=axis))
  other = 2 if axis == 1 else 1
  per_position = second.sum(axis=other)  # (batch, positions)
  positions = np.arange(per_position.shape[1]) + 1  # d2[i] is centred on pixel i + 1
  energy = np.stack([per_position[:, positions % cell == p].sum(axis=1) for p in range(cell)], 1)
  return [tuple(np.flatnonzero(e > 0.5 * e.max())) for e in energy]


@pytest.mark.parametrize("axis", [1, 2])
def test_noise_grid_is_shifted_in_each_slice(axis):
  shape, cell = (16, 64, 64, 1), 64 // 8
  shifted = unet_dae.shifted_coarse_noise(jax.random.key(0), shape, 0.2, 8)
  aligned = dae.coarse_noise(jax.random.key(0), shape, 0.2, 8)
  assert len(set(_knot_phases(aligned, axis, cell))) == 1  # the check sees alignment
  assert len(set(_knot_phases(shifted, axis, cell))) >= 4
  assert 0.1 < float(jnp.std(shifted)) < 0.25  # as coarse and as strong as dae's noise


class FixedReconstruction:
  """Stands in for the network: always "reconstructs" the same image."""

  def __init__(self, recon):
    self.recon = recon

  def apply(self, variables, x):
    del variables, x
    return self.recon


def test_loss_counts_brain_voxels_only():
  rng = np.random.default_rng(0)
  images = rng.random((2, 32, 32, 1)).astype(np.float32)
  recon = rng.random((2, 32, 32, 1)).astype(np.float32)
  brain = disc_mask(2, 32)
  loss, _ = unet_dae.loss_fn(FixedReconstruction(recon), None, as_batch(images, brain),
                             jax.random.key(0))
  np.testing.assert_allclose(loss, np.sum(((recon - images) ** 2)[brain]) / images.size,
                             rtol=1e-5)
  # Another image (and reconstruction) outside the brain: the same loss, exactly.
  changed_images = np.where(brain, images, 5.0).astype(np.float32)
  changed_recon = np.where(brain, recon, -3.0).astype(np.float32)
  same, _ = unet_dae.loss_fn(FixedReconstruction(changed_recon), None,
                             as_batch(changed_images, brain), jax.random.key(0))
  assert float(same) == float(loss)
  inside = images + np.where(brain, 0.1, 0.0).astype(np.float32)
  different, _ = unet_dae.loss_fn(FixedReconstruction(recon), None, as_batch(inside, brain),
                                  jax.random.key(0))
  assert float(different) != float(loss)


def test_loss_is_the_noisy_reconstruction_against_the_clean_brain(net_and_params):
  net, params, images = net_and_params
  brain = disc_mask(2, 32)
  rng = jax.random.key(5)
  loss, _ = unet_dae.loss_fn(net, params, as_batch(images, brain), rng, noise_std=0.3,
                             noise_resolution=4)
  recon = net.apply({"params": params}, unet_dae.noisy_brain(rng, images, brain, 0.3, 4))
  expected = jnp.sum(jnp.where(brain, (recon - images) ** 2, 0.0)) / images.size
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
