"""The jitted initial state equals the layer-by-layer (eager) one, bit for bit."""

import jax
import numpy as np
import pytest

from brainseg_jax.models import create_model, create_train_state
from configs import vae

pytestmark = pytest.mark.slow  # compiles every family's init twice


@pytest.mark.parametrize("module", [vae])  # each family was checked once; eager init is slow
def test_jitted_init_equals_eager_init(module):
  config = module.get_config()
  config.dataset.resolution = 32
  model = create_model(config)
  jitted = create_train_state(model, config)
  eager = model.create_state(jax.random.key(config.seed), (32, 32, 1))
  assert jax.tree.structure(jitted) == jax.tree.structure(eager)
  for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
