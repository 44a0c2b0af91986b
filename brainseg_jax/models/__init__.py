"""Model families: a name -> module table (see base.Model for the interface).

Each family's module builds its `Model` from the experiment config with
`create_model(config)`, as big_vision's model modules do, and declares its own
config keys beside its code: `model_config()` (the `config.model` block with
its defaults), `smoke(model)` (what the `:smoke` variant shrinks) and
`check(config)` (UserError naming a key that cannot work). Adding a family is a
new module and one line in `FAMILIES`.
"""

import jax
import ml_collections

from brainseg_jax import config as config_lib
from brainseg_jax import host_memory
from brainseg_jax.errors import UserError
from brainseg_jax.models import ae, dae, fanogan, threshold, unet_dae, vae
from brainseg_jax.models.base import Model

FAMILIES = {"ae": ae, "vae": vae, "dae": dae, "unet_dae": unet_dae, "fanogan": fanogan,
            "threshold": threshold}
NAMES = tuple(FAMILIES)


def create_model(config: ml_collections.ConfigDict) -> Model:
  """Builds the model named by `config.model.name` from a full experiment config."""
  name = config.model.name
  if name not in FAMILIES:
    raise UserError(f"unknown model.name {name!r}: expected one of {', '.join(NAMES)}")
  return FAMILIES[name].create_model(config)


def create_train_state(model: Model, config: ml_collections.ConfigDict):
  """The model's initial state for the config's image size and channels, from its seed.

  Jitted: run eagerly, `init` compiled every layer's ops one by one and left
  their executables behind; as one function it gives the same parameters bit for
  bit and a training process peaks ~450 MB lower (bench/train_benchmark.py).
  """
  shape = config_lib.image_shape(config)
  state = jax.jit(lambda rng: model.create_state(rng, shape))(jax.random.key(config.seed))
  host_memory.release_freed_heap()  # what compiling the initialisation left behind
  return state


__all__ = ["FAMILIES", "NAMES", "Model", "create_model", "create_train_state"]
