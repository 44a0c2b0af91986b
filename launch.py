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

from brainseg_jax import cli, experiment


def main():
  cli.define_config_flags()
  cli.define_device_flags(distributed=True)
  cli.run(lambda: experiment.train_then_evaluate(*cli.experiment(experiment.default_workdir)))


if __name__ == "__main__":
  main()
