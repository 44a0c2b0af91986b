"""Train a model on a dataset, then evaluate it: the project's main job.

    python launch.py --config=configs/vae.py          # workdir runs/vae
    python launch.py --config=configs/vae.py:smoke    # workdir runs/vae_smoke
    brainseg-train --config=configs/vae.py            # the same, installed

Starting again with the same workdir resumes training from its latest
checkpoint; a finished run goes straight to evaluation.
"""

from brainseg_jax import cli, experiment


def main():
  cli.define_config_flags()
  cli.define_device_flags(distributed=True)
  cli.run(lambda: experiment.train_then_evaluate(*cli.experiment(experiment.default_workdir)))
