"""Intensity baseline: the anomaly map is the normalised intensity itself.

Hyperintense lesions on FLAIR are, by definition, brighter than healthy
tissue, and thresholding FLAIR beats most published autoencoders on them
(Meissen et al., 2021). Every learned model is compared with this baseline on
the same data and protocol: the threshold is calibrated on healthy validation
brains exactly as for the models. Nothing is trained.
"""

import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from brainseg_jax.models.base import Model


def create_state(rng, image_shape) -> train_state.TrainState:
  del rng, image_shape  # no parameters
  state = train_state.TrainState.create(apply_fn=None, params={}, tx=optax.identity())
  return state.replace(step=jnp.asarray(0, jnp.int32))


def reconstruct(state, images):
  """An all-zero "reconstruction", so the residual x - 0 is the intensity."""
  del state
  return jnp.zeros_like(images)


def create_model(config: ml_collections.ConfigDict) -> Model:
  del config  # nothing to configure
  return Model("threshold", create_state, None, reconstruct, trainable=False)


# --------------------------------------------------------------------------- config


# Model keys that shape training only: a trained model is scored the same whatever their value, so
# config.model_differences does not compare them. Nothing to train.
TRAINING_ONLY_KEYS = ()


def model_config() -> ml_collections.ConfigDict:
  """Nothing to configure but the name."""
  return ml_collections.ConfigDict({"name": "threshold"})


def smoke(model: ml_collections.ConfigDict) -> None:
  del model  # nothing to shrink


def check(config: ml_collections.ConfigDict) -> None:
  del config  # nothing to check
