"""Ship a trained, evaluated run inside the package as a named model (brainseg_jax/pretrained.py).

    python -m brainseg_jax.export --workdir=runs/lgg/unet_dae_lgg --name=lgg_flair_unet \\
        --summary="..." --card=docs/models/lgg_flair_unet.md \\
        --training_data="..." --licence="..."

Writes brainseg_jax/pretrained/<name>/: the parameters of the checkpoint the
run's thresholds were set on, its config, its evaluation and its card's facts.
The model card (the markdown file `--card` names) is written by hand.
"""

from absl import flags, logging

from brainseg_jax import cli, pretrained

FLAGS = flags.FLAGS


def main():
  flags.DEFINE_string("workdir", None, "The trained and evaluated run.")
  flags.DEFINE_string("name", None, "The model's name (predict --model=NAME).")
  flags.DEFINE_string("summary", None, "One line: what the model is and is for.")
  flags.DEFINE_string("version", "1", "The model's version; a new one gets its own workdir.")
  flags.DEFINE_string("card", None, "The model card, relative to the repository root.")
  flags.DEFINE_string("training_data", None, "The training data, with its source.")
  flags.DEFINE_string("licence", None, "The training data's licence and citation.")

  def command():
    cli.require_flags("workdir", "name", "summary", "card", "training_data", "licence")
    target = pretrained.export(FLAGS.workdir, FLAGS.name, FLAGS.summary, FLAGS.version,
                               FLAGS.card, FLAGS.training_data, FLAGS.licence)
    logging.info("model %r written to %s", FLAGS.name, target)

  cli.run(command)


if __name__ == "__main__":
  main()
