"""Trains and evaluates several configs on the same data and writes one Markdown table.

    python -m brainseg_jax.compare --configs=ae,vae,dae,fanogan,threshold \
        --output=docs/results_synthetic.md --override=dataset.resolution=64

Every model is scored by the same protocol (threshold from healthy validation
data), next to the intensity baseline. Runs already trained in
`--workdir_root/<config>` are resumed, not redone, so the command can be
rerun after an interruption.
"""

import ast
import importlib.util
import os
import shlex
import sys

from absl import app, flags, logging

from brainseg_jax import cli, parallel, train  # cli defines --cpu_devices
from brainseg_jax import eval as evaluation
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.errors import UserError

flags.DEFINE_list("configs", ["threshold", "ae", "vae", "dae", "fanogan"],
                  "Config names in configs/ (optionally name:variant).")
flags.DEFINE_multi_string("override", [], "key=value applied to every config, e.g. "
                          "dataset.resolution=64; name:key=value to one config only, e.g. "
                          "fanogan:model.gan_steps=500.")
flags.DEFINE_string("workdir_root", "runs/compare", "One workdir per config under this folder.")
flags.DEFINE_string("output", "docs/results.md", "Markdown file to write.")
flags.DEFINE_string("title", "", "Heading of the table (default: the dataset).")
FLAGS = flags.FLAGS

_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config(spec: str):
  """configs/<name>.py's get_config(variant) for a spec "name" or "name:variant"."""
  name, _, variant = spec.partition(":")
  path = os.path.join(_CONFIG_DIR, f"{name}.py")
  if not os.path.isfile(path):
    raise UserError(f"no config file {path}")
  if _CONFIG_DIR not in sys.path:
    sys.path.insert(0, os.path.dirname(_CONFIG_DIR))
  module_spec = importlib.util.spec_from_file_location(f"configs.{name}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def apply_override(config, override: str):
  key, sep, raw = override.partition("=")
  if not sep:
    raise UserError(f"--override {override!r} is not key=value")
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  node = config
  *parents, leaf = key.split(".")
  for part in parents:
    node = node[part]
  if leaf not in node:
    raise UserError(f"--override {override!r}: the config has no key {key!r}")
  node[leaf] = value


def run_one(spec: str, workdir: str) -> dict:
  config = load_config(spec)
  name = spec.partition(":")[0]
  for override in FLAGS.override:
    target, sep, rest = override.partition(":")
    if sep and "=" not in target:  # "name:key=value"
      if target == name:
        apply_override(config, rest)
    else:
      apply_override(config, override)
  state = train.train(config, workdir)
  result = evaluation.evaluate(config, workdir)
  # Training time summed over resumed sessions (0 for models with nothing to train).
  result["train_seconds"] = (0.0 if state is None else
                             workdir_lib.read_train_seconds(workdir, int(state.step)))
  result["config"] = spec
  return result


def markdown_table(results: list[dict], title: str) -> str:
  fpr = results[0]["protocol"]["healthy_fprs"][0]
  lines = [f"### {title}", "",
           f"Threshold from healthy validation data (FPR {fpr:.0%} of healthy brain voxels); "
           "best Dice is the best single threshold chosen on the test labels, an upper bound.", "",
           "| model | lesions | Dice | best Dice (upper bound) | AUROC | AUPRC | accuracy | "
           "train time |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for result in results:
    for group, m in result["pooled"].items():
      minutes = result["train_seconds"] / 60
      if group != "all" and m["num_volumes"] == result["pooled"]["all"]["num_volumes"]:
        continue  # a single kind of anomaly: its row repeats "all"
      lines.append(f"| {result['config']} | {group} ({m['num_volumes']}) | {m['dice']:.3f} | "
                   f"{m['best_dice_upper_bound']:.3f} | {m['auroc']:.3f} | {m['auprc']:.3f} | "
                   f"{m['accuracy']:.4f} | {minutes:.1f} min |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  parallel.split_host_into_devices(FLAGS.cpu_devices)
  logging.get_absl_handler().addFilter(cli.ProjectInfoOnly())
  try:
    results = [run_one(spec, os.path.join(FLAGS.workdir_root, spec.replace(":", "_")))
               for spec in FLAGS.configs]
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  title = FLAGS.title or f"{results[0]['dataset']} (test: {results[0]['test_dataset']})"
  table = markdown_table(results, title)
  command = "python -m brainseg_jax.compare " + shlex.join(sys.argv[1:])
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    f.write(f"{table}\nMade by `{command}`.\n")
  logging.info("wrote %s", FLAGS.output)
  print(table)


if __name__ == "__main__":
  app.run(main)
