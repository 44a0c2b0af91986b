"""Model families and the one place that turns a config into a model (see base.Model)."""

import functools

import ml_collections

from brainseg_jax.errors import UserError
from brainseg_jax.models import ae, dae, fanogan, reconstruction, threshold, vae
from brainseg_jax.models.base import Model

NAMES = ("ae", "vae", "dae", "fanogan", "threshold")


_ARCHITECTURE_KEYS = ("channels", "bottleneck", "latent_dim", "latent_channels",
                      "blocks_per_level", "norm")


def _architecture(model_config) -> dict:
  architecture = {k: model_config[k] for k in _ARCHITECTURE_KEYS if k in model_config}
  architecture["channels"] = tuple(architecture["channels"])
  return architecture


def create_model(config: ml_collections.ConfigDict) -> Model:
  """Builds the model named by `config.model.name` from a full experiment config."""
  name = config.model.name
  if name == "threshold":
    return Model(name, threshold.create_state, None, threshold.reconstruct, trainable=False)
  if name == "fanogan":
    return fanogan.create_model(config)
  if name == "ae":
    module = ae.AutoEncoder(**_architecture(config.model))
    loss, recon = functools.partial(ae.loss_fn, module), functools.partial(ae.reconstruct, module)
  elif name == "vae":
    module = vae.VariationalAutoEncoder(**_architecture(config.model))
    loss = functools.partial(vae.loss_fn, module, kl_weight=config.model.kl_weight)
    recon = functools.partial(vae.reconstruct, module)
  elif name == "dae":
    module = ae.AutoEncoder(**_architecture(config.model))
    loss = functools.partial(dae.loss_fn, module, noise_std=config.model.noise_std,
                             noise_resolution=config.model.noise_resolution)
    recon = functools.partial(ae.reconstruct, module)
  else:
    raise UserError(f"unknown model.name {name!r}: expected one of {', '.join(NAMES)}")
  tx = reconstruction.make_optimizer(config)
  return Model(
      name=name,
      create_state=functools.partial(reconstruction.create_state, module, tx),
      train_step=reconstruction.make_train_step(loss, config.seed),
      reconstruct=lambda state, images: recon(state.params, images),
  )
