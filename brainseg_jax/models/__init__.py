"""Model families and the one place that turns a config into a model.

Every family exposes the same three things to the rest of the code, so that
training, scoring and evaluation never ask which model they run:
  module:      the linen module (pure: parameters live outside it);
  loss:        (params, images, rng) -> (scalar loss, dict of scalar metrics);
  reconstruct: (params, images) -> deterministic reconstruction of images.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import ml_collections

from brainseg_jax.errors import UserError
from brainseg_jax.models import ae, vae


@dataclasses.dataclass(frozen=True)
class Model:
  name: str
  module: nn.Module
  loss: Callable[..., Any]
  reconstruct: Callable[..., Any]

  def init(self, rng, images):
    """Parameters for images of this batch shape."""
    return self.module.init(rng, images)["params"]


_ARCHITECTURE_KEYS = ("channels", "bottleneck", "latent_dim", "latent_channels",
                      "blocks_per_level", "norm")


def create_model(config: ml_collections.ConfigDict) -> Model:
  """Builds the model named by `config.name` from a `config.model` section."""
  architecture = {k: config[k] for k in _ARCHITECTURE_KEYS if k in config}
  architecture["channels"] = tuple(architecture["channels"])
  if config.name == "ae":
    module = ae.AutoEncoder(**architecture)
    return Model("ae", module, functools.partial(ae.loss_fn, module),
                 functools.partial(ae.reconstruct, module))
  if config.name == "vae":
    module = vae.VariationalAutoEncoder(**architecture)
    loss = functools.partial(vae.loss_fn, module, kl_weight=config.kl_weight)
    return Model("vae", module, loss, functools.partial(vae.reconstruct, module))
  raise UserError(f"unknown model.name {config.name!r}: expected one of 'ae', 'vae'")
