"""Peak RSS of one JAX training process, phase by phase: where the memory goes.

    python bench/train_memory.py [--models=ae,vae,unet_dae] [--devices=N] [--eager_init]

Builds each model's initial state, then runs a few of its jitted train steps
(sharded over --devices as train.py does, on a random batch of the config's
shape), and prints ru_maxrss after each phase, with XLA's own count of the
step's temporary buffers. `--eager_init` builds the state layer by layer as
before 2026-11-30 (`model.create_state` outside jit) to measure what the jitted
`models.create_train_state` saves.
"""

import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_list("models", ["ae", "vae", "unet_dae"], "Configs in configs/, trained in turn.")
flags.DEFINE_integer("devices", None, "XLA CPU devices to split the host into (default: as "
                     "training, two per core).")
flags.DEFINE_integer("steps", 3, "Train steps per model.")
flags.DEFINE_bool("eager_init", False, "Build the initial state outside jit (the former way).")
FLAGS = flags.FLAGS


def _peak_mb() -> int:
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux


def main(argv):
  del argv
  from brainseg_jax import parallel
  parallel.split_host_into_devices(FLAGS.devices)
  import importlib

  import jax
  import numpy as np

  from brainseg_jax import train
  from brainseg_jax.models import create_model, create_train_state

  mesh = parallel.data_mesh()
  print(f"start: peak RSS {_peak_mb()} MB ({mesh.size} devices)")
  for name in FLAGS.models:
    config = importlib.import_module(f"configs.{name}").get_config()
    model = create_model(config)
    size = config.dataset.resolution
    if FLAGS.eager_init:
      state = model.create_state(jax.random.key(config.seed), (size, size, 1))
    else:
      state = create_train_state(model, config)
    print(f"{name}: initial state: peak RSS {_peak_mb()} MB")
    rng = np.random.default_rng(0)
    batch = {"image": rng.random((config.batch_size, size, size, 1), np.float32),
             "brain_mask": np.ones((config.batch_size, size, size, 1), bool)}
    state = jax.device_put(state, parallel.replicated(mesh))
    batch = jax.device_put(batch, parallel.batch_sharded(mesh))
    step = train.jit_train_step(model, mesh)
    memory = step.lower(state, batch).compile().memory_analysis()
    for _ in range(FLAGS.steps):
      state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    temp = (f", XLA temporaries {memory.temp_size_in_bytes / 2**20:.0f} MB per device"
            if memory else "")
    print(f"{name}: {FLAGS.steps} train steps (batch {config.batch_size}, {size}x{size}): "
          f"peak RSS {_peak_mb()} MB{temp}")


if __name__ == "__main__":
  app.run(main)
