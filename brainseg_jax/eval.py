"""Evaluate a trained model.

    python -m brainseg_jax.eval --config=configs/vae.py --workdir=runs/vae
    python -m brainseg_jax.eval --model=lgg_flair_unet --config=configs/unet_dae.py:lgg \\
        --config.dataset.manual_dir=/data/kaggle_3m --workdir=runs/shipped_unet

Scores the validation and test volumes of the config's dataset by the
protocol of brainseg_jax/evaluation.py and writes the metrics, tables,
figures and NIfTI maps into the workdir. launch.py does this after training.
With `--model`, the model is one shipped with the package (its model card's
command): a workdir of it is written into --workdir and evaluated there.
"""

from absl import flags

from brainseg_jax import cli, evaluation, pretrained

FLAGS = flags.FLAGS


def main():
  cli.define_config_flags()
  cli.define_device_flags(distributed=True)
  flags.DEFINE_string("model", None, "A model shipped with the package (predict "
                      "--list_models), evaluated in a copy written into --workdir.")

  def command():
    config, workdir = cli.experiment()
    if FLAGS.model:
      workdir = pretrained.workdir(FLAGS.model, into=workdir)
    evaluation.evaluate(config, workdir)

  cli.run(command)


if __name__ == "__main__":
  main()
