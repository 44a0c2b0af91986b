"""Anomaly maps: what the model cannot reconstruct, inside the brain.

One jitted function scores all slices of a volume at once, split over the
devices along the slice axis. It compiles once per volume shape, so every
volume of a dataset reuses the same executable.
"""

import jax
import jax.numpy as jnp
import numpy as np

from brainseg_jax import checkpoints, parallel, postprocess
from brainseg_jax import config as config_lib
from brainseg_jax.config import RESIDUALS
from brainseg_jax.datasets import input_pipeline
from brainseg_jax.models import Model, create_model


def anomaly_map(images, reconstruction, brain_mask, residual: str = "abs", channels=None):
  """|x - x_hat| ("abs") or max(x - x_hat, 0) ("positive"), zero outside the brain.

  "positive" is for anomalies known to be hyperintense (FLAIR lesions), where
  a reconstruction brighter than the input is not a finding. Images with
  several channels (modalities) give one map: the mean residual over them, or
  over the `channels` (indices) given.
  """
  diff = images - reconstruction
  if channels is not None:
    diff = diff[..., list(channels)]
  anomaly = jnp.abs(diff) if residual == "abs" else jnp.maximum(diff, 0.0)
  anomaly = jnp.mean(anomaly, axis=-1, keepdims=True)
  return jnp.where(brain_mask, anomaly, 0.0)


class VolumeScorer:
  """(train state, images (S, H, W, C), brain mask) -> numpy (reconstruction, anomaly map).

  A 2.5D model (`context` > 0) is given each slice with its neighbours
  (input_pipeline.context_stack); the reconstruction and the map returned
  are the centre slice's, so callers see the volume's own channels.
  """

  def __init__(self, model: Model, residual: str = "abs", mesh=None, channels=None,
               context: int = 0):
    if residual not in RESIDUALS:
      raise ValueError(f"unknown residual {residual!r}: expected one of {RESIDUALS}")
    self.model = model
    self.context = context
    self.mesh = parallel.data_mesh(jax.local_devices()) if mesh is None else mesh
    slices = parallel.batch_sharded(self.mesh)
    self._slices = slices

    def score(state, stacked, brain_mask):
      recon = model.reconstruct(state, stacked)
      width = stacked.shape[-1] // (2 * context + 1)  # the volume's own channels
      centre = slice(context * width, (context + 1) * width)
      images, recon = stacked[..., centre], recon[..., centre]
      return recon, anomaly_map(images, recon, brain_mask, residual, channels)

    self._score = jax.jit(score, in_shardings=(parallel.replicated(self.mesh), slices, slices),
                          out_shardings=(slices, slices))

  def place(self, state):
    """Copies the model state to every device once, not once per volume."""
    return jax.device_put(state, parallel.replicated(self.mesh))

  def __call__(self, state, images: np.ndarray, brain_mask: np.ndarray):
    images = input_pipeline.context_stack(images, self.context)
    num_slices = images.shape[0]
    pad = -num_slices % self.mesh.size  # the slice axis must split evenly
    if pad:
      widths = [(0, pad)] + [(0, 0)] * (images.ndim - 1)
      images, brain_mask = np.pad(images, widths), np.pad(brain_mask, widths)
    # Explicit placement: this process's devices only, also in a multi-process run.
    images, brain_mask = jax.device_put((images, brain_mask), self._slices)
    recon, anomaly = self._score(state, images, brain_mask)
    return np.asarray(recon)[:num_slices], np.asarray(anomaly)[:num_slices]

  def compiled_versions(self) -> int:
    return self._score._cache_size()


def scorer_for(model: Model, config, mesh=None) -> VolumeScorer:
  """The scorer a config asks for: its residual over its scored channels (config.py)."""
  return VolumeScorer(model, config_lib.residual(config), mesh,
                      config_lib.scored_channel_indices(config),
                      config_lib.context_slices(config))


def restore_scorer(config, workdir: str,
                   step: int | None = None) -> tuple[VolumeScorer, object, int]:
  """(scorer, its state placed on the devices, checkpoint step) of the model in `workdir`.

  What eval, compare and predict each need before scoring a volume. `step`:
  that checkpoint (the one a threshold was set on), default the latest.
  """
  model = create_model(config)
  state, step = checkpoints.restore_trained(config, workdir, model, step)
  scorer = scorer_for(model, config)
  return scorer, scorer.place(state), step


def anomaly_maps(scorer: VolumeScorer, state, volume, postprocess_config):
  """Reconstruction and post-processed anomaly map of a `Volume`, numpy (S, H, W)."""
  recon, anomaly = scorer(state, volume.image, volume.brain_mask)
  image, brain = volume.image[..., 0], volume.brain_mask[..., 0]
  return recon[..., 0], postprocess.clean_map(anomaly[..., 0], image, brain, postprocess_config)
