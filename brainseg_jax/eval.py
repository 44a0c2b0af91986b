"""Evaluate a trained model.

    python -m brainseg_jax.eval --config=configs/vae.py --workdir=runs/vae

Scores the validation and test volumes of the config's dataset by the
protocol of brainseg_jax/evaluation.py and writes the metrics, tables,
figures and NIfTI maps into the workdir. launch.py does this after training.
"""

from brainseg_jax import cli, evaluation


def main():
  cli.define_config_flags()
  cli.define_device_flags(distributed=True)
  cli.run(lambda: evaluation.evaluate(*cli.experiment()))


if __name__ == "__main__":
  main()
