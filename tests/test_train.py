import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brainseg_jax import config as config_lib
from brainseg_jax import parallel, train
from brainseg_jax.datasets import input_pipeline
from brainseg_jax.errors import UserError
from brainseg_jax.models import create_model
from configs import fanogan as fanogan_config
from configs import unet_dae as unet_dae_config
from configs import vae as vae_config
from tests.helpers import as_batch

pytestmark = pytest.mark.slow  # compiles and trains


def tiny_config(data_dir, name="vae"):
  config = vae_config.get_config("smoke")
  config.model.name = name
  config.dataset.resolution = 32
  config.dataset.data_dir = data_dir
  config.model.channels = (8, 16)
  config.batch_size = 8
  config.num_train_steps = 6
  config.warmup_steps = 2
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  return config


def fixed_batch(size=8, resolution=32):
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:resolution, :resolution] / resolution
  blobs = [np.exp(-((xx - rng.random()) ** 2 + (yy - rng.random()) ** 2) * 20) for _ in range(size)]
  return jnp.asarray(np.stack(blobs)[..., None], jnp.float32)


@pytest.mark.parametrize("name", ["ae", "vae"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(name):
  config = tiny_config("", name)
  config.num_train_steps = 100
  model = create_model(config)
  mesh = parallel.data_mesh()
  state = jax.device_put(train.create_train_state(model, config), parallel.replicated(mesh))
  step = train.jit_train_step(model, mesh)
  batch = as_batch(fixed_batch())
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch, 0)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.5 * losses[0], losses
  assert step._cache_size() == 1  # compiled once, not per step
  assert model.stage_of(0) == model.stage_of(99) == 0


def test_step_on_four_devices_equals_step_on_one():
  assert jax.device_count() >= 4, "conftest asks XLA for 4 CPU devices"
  config = tiny_config("")
  model = create_model(config)
  batch = as_batch(fixed_batch())
  params = {}
  for n in (1, 4):
    mesh = parallel.data_mesh(jax.devices()[:n])
    state = jax.device_put(train.create_train_state(model, config), parallel.replicated(mesh))
    step = train.jit_train_step(model, mesh)
    for _ in range(3):
      state, _ = step(state, jax.device_put(batch, parallel.batch_sharded(mesh)), 0)
    assert len(state.params["Bottleneck_0"]["Dense_0"]["kernel"].sharding.device_set) == n
    params[n] = jax.device_get(state.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
               params[1], params[4])


def test_killed_run_resumes_to_the_same_parameters(tmp_path, data_dir, monkeypatch):
  config = tiny_config(data_dir)
  uninterrupted = jax.device_get(train.train(config, str(tmp_path / "a")).params)

  # Kill the second run after its step-3 checkpoint: the 4th batch never comes.
  real_batches = input_pipeline.train_batches

  def dying_batches(*args, **kwargs):
    iterator = real_batches(*args, **kwargs)
    for _ in range(3):
      yield next(iterator)
    raise KeyboardInterrupt("simulated kill")

  monkeypatch.setattr(input_pipeline, "train_batches", dying_batches)
  with pytest.raises(KeyboardInterrupt):
    train.train(config, str(tmp_path / "b"))
  monkeypatch.setattr(input_pipeline, "train_batches", real_batches)

  resumed = train.train(config, str(tmp_path / "b"))
  assert int(resumed.step) == 6
  jax.tree.map(np.testing.assert_array_equal, uninterrupted, jax.device_get(resumed.params))
  # ...and an interrupted run that was not resumed really differs.
  assert (tmp_path / "b" / "train_log.jsonl").read_text().count('"step": 6') == 1


def test_impossible_configs_are_rejected_with_the_cause():
  config = tiny_config("")
  config.batch_size = 6
  with pytest.raises(UserError, match="batch_size 6 is not divisible by the 4 devices"):
    config_lib.check(config, 4)
  config = tiny_config("")
  config.dataset.resolution = 34
  with pytest.raises(UserError, match="resolution 34 is not divisible by 2\\^2 = 4"):
    config_lib.check(config, 4)


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(UserError, match="is not writable"):
    train.train(tiny_config(""), str(blocker / "run"))


@pytest.mark.parametrize("name", ["vae", "unet_dae", "fanogan"])
def test_train_step_compiles_once_per_stage(name, caplog):
  """Steady-state steps must reuse the first compilation (checked with jax.log_compiles)."""
  config = tiny_config(data_dir=None)
  if name == "unet_dae":
    config.model = unet_dae_config.get_config("smoke").model
  if name == "fanogan":
    config.model = fanogan_config.get_config("smoke").model
    config.model.gan_steps = 3  # steps 0-2 train the GAN, 3-5 the encoder
    config.model.critic_steps = 2
  model = create_model(config)
  mesh = parallel.data_mesh()
  state = jax.device_put(train.create_train_state(model, config), parallel.replicated(mesh))
  step = train.jit_train_step(model, mesh)
  batch = jax.device_put(as_batch(fixed_batch()), parallel.batch_sharded(mesh))
  stages = sorted({model.stage_of(i) for i in range(config.num_train_steps)})

  def compiled_train_steps():
    messages = [r.getMessage() for r in caplog.records]
    caplog.clear()
    return [m for m in messages if "ompil" in m and "train_step" in m]

  with jax.log_compiles(), caplog.at_level(logging.DEBUG):
    for stage in stages:  # as train.py does before a stage's first step
      train.compile_ahead(step, state, batch, stage)
    ahead = compiled_train_steps()
    for _ in range(3):
      for stage in stages:
        state, metrics = step(state, batch, stage)
    jax.block_until_ready(metrics)
    later = compiled_train_steps()
  assert len(stages) == (3 if name == "fanogan" else 1)
  assert len(ahead) >= len(stages), ahead  # the check does see compilations
  assert later == [], later  # the steps, the first ones included, reuse them
  assert step._cache_size() == len(stages)


def test_training_process_does_not_load_the_preprocessing_libraries():
  """A training process reads built datasets only: SimpleITK (~110 MB resident) stays out."""
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = ("import sys; import brainseg_jax.train, brainseg_jax.datasets.input_pipeline; "
          "from brainseg_jax.datasets import synthetic_brain; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] == 'SimpleITK'))")
  out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       check=True).stdout
  assert out.strip().splitlines()[-1] == "[]"
