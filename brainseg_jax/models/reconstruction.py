"""Training machinery shared by the single-network reconstruction models (AE, VAE, DAEs).

A family only supplies its linen module, its loss and how it reconstructs;
`make_model` turns those into the `Model` interface: a train state with Adam
(or AMSGrad) under a warm-up + cosine schedule, and a pure train step.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from brainseg_jax import augment
from brainseg_jax.models.base import Model

# config.optimizer -> the optax optimiser the learning-rate schedule drives.
OPTIMIZERS = {"adam": optax.adam, "amsgrad": optax.amsgrad}


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam (or AMSGrad) with linear warm-up, cosine decay to 1 % and global-norm clipping.

  `weight_decay` > 0 adds weight_decay * params to the clipped gradient before
  Adam's scaling: L2 regularisation as torch.optim.Adam(weight_decay=...) does
  it (the denoising U-Net paper's optimiser), not AdamW's decoupled decay.
  """
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
      decay_steps=config.num_train_steps, end_value=0.01 * config.learning_rate)
  transforms = [optax.clip_by_global_norm(config.grad_clip_norm)]
  if config.weight_decay:
    transforms.append(optax.add_decayed_weights(config.weight_decay))
  transforms.append(OPTIMIZERS[config.optimizer](schedule))
  return optax.chain(*transforms)


def create_state(module, tx, rng, image_shape) -> train_state.TrainState:
  params = module.init(rng, jnp.zeros((1, *image_shape), jnp.float32))["params"]
  state = train_state.TrainState.create(apply_fn=module.apply, params=params, tx=tx)
  # An array, not a Python int: the step is then saved and sharded like the rest.
  return state.replace(step=jnp.asarray(0, jnp.int32))


def make_train_step(loss_fn, seed: int, augment_config: ml_collections.ConfigDict | None = None):
  """One optimiser step on a global batch; `loss_fn(params, batch, rng)` is a batch mean.

  `batch` is the dict of input_pipeline.train_batches ("image", "brain_mask").
  With `augment_config.intensity`, the batch's images are augmented first
  (brainseg_jax/augment.py) from a key of their own.
  """

  def train_step(state, batch, stage=0):
    del stage  # one stage
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    if augment_config is not None and augment_config.intensity:
      rng, augment_rng = jax.random.split(rng)
      batch = {**batch, "image": augment.intensity(augment_rng, batch["image"],
                                                    batch["brain_mask"], augment_config)}
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, batch, rng)
    return state.apply_gradients(grads=grads), metrics

  return train_step


def make_model(name: str, module, loss_fn, reconstruct, config: ml_collections.ConfigDict) -> Model:
  """A `Model` from a linen module, `loss_fn(params, batch, rng)` and `reconstruct(params, x)`."""
  return Model(
      name=name,
      create_state=functools.partial(create_state, module, make_optimizer(config)),
      train_step=make_train_step(loss_fn, config.seed, config.augment),
      reconstruct=lambda state, images: reconstruct(state.params, images),
  )
