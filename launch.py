"""Train a model on a dataset, then evaluate it: the project's main job.

    python launch.py --config=configs/vae.py          # workdir runs/vae
    python launch.py --config=configs/vae.py:smoke    # workdir runs/vae_smoke

Starting again with the same workdir resumes training from its latest
checkpoint; a finished run goes straight to evaluation.
"""

if __name__ == "__main__":
  # Before JAX is imported: the process restarts itself once with malloc set for
  # XLA's per-step buffers (huge pages; see brainseg_jax/host_memory.py).
  from brainseg_jax import host_memory
  host_memory.restart_with_huge_pages()

import jax
from absl import logging

from brainseg_jax import cli, train
from brainseg_jax import eval as evaluation


def default_workdir(config) -> str:
  return f"runs/{config.experiment}"


def train_then_evaluate(config, workdir):
  train.train(config, workdir)
  result = evaluation.evaluate(config, workdir)
  if jax.process_index() == 0:
    logging.info("wrote metrics, figures and NIfTI maps to %s", workdir)
  return result


def main():
  cli.define_config_flags()
  cli.define_device_flags(distributed=True)
  cli.run(lambda: train_then_evaluate(*cli.experiment(default_workdir)))


if __name__ == "__main__":
  main()
