"""Trains and evaluates several configs on the same data and writes one Markdown table.

    python -m brainseg_jax.compare --configs=ae,vae,dae,fanogan,threshold \
        --output=docs/results_synthetic.md --override=dataset.resolution=64

Every model is scored by the same protocol (threshold from healthy validation
data), next to the intensity baseline. Runs already trained in
`--workdir_root/<config>` are resumed, not redone, so the command can be
rerun after an interruption.
"""

if __name__ == "__main__":
  # Before JAX is imported, as in launch.py (see brainseg_jax/host_memory.py).
  from brainseg_jax import host_memory
  host_memory.restart_with_huge_pages()

import os
import shlex
import sys

import numpy as np
from absl import flags, logging

from brainseg_jax import (
  adaptive,
  cli,
  evaluation,
  experiment,
  figures,
  postprocess,
  scoring,
  standardization,
)
from brainseg_jax import config as config_lib
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.datasets import input_pipeline
from brainseg_jax.errors import UserError
from brainseg_jax.workdir import LABELLED
from data_prep import atomic

FLAGS = flags.FLAGS


def overrides_for(spec: str, overrides: list[str]) -> list[str]:
  """The key=value overrides that apply to one config: shared ones and "name:key=value" ones."""
  name = spec.partition(":")[0]
  mine = []
  for override in overrides:
    target, sep, rest = override.partition(":")
    if sep and "=" not in target:  # "name:key=value"
      if target == name:
        mine.append(rest)
    elif "=" not in override:
      raise UserError(f"--override {override!r} is not key=value")
    else:
      mine.append(override)
  return mine


def run_one(spec: str, workdir: str, overrides: list[str]) -> dict:
  config = config_lib.load(spec, overrides_for(spec, overrides))
  result = experiment.train_then_evaluate(config, workdir)
  result["config"] = spec
  return result


def markdown_table(results: list[dict], title: str) -> str:
  fpr = results[0]["protocol"]["healthy_fprs"][0]
  labelled = any(LABELLED in r["protocol"]["thresholds"] for r in results)
  scan_adaptive = adaptive.name(fpr)
  lines = [f"### {title}", "",
           f"Dice at the threshold that flags {fpr:.0%} of healthy validation brain voxels"
           f"; Dice (adaptive): each scan's own threshold flagging {fpr:.0%} of healthy "
           "validation voxels in units of the scan's own anomaly-map spread (no test label)"
           + ("; Dice (labelled val.) at the threshold of best Dice on the labelled validation "
              "patients (what most papers report)" if labelled else "")
           + "; best Dice is the best single threshold chosen on the test labels, an upper "
           "bound. Lesions found: lesion-wise detection (3D components hit) at the healthy "
           "threshold; FP comp./scan: predicted components touching no lesion, per scan.", "",
           "| model | lesions | Dice | Dice (adaptive) | "
           + ("Dice (labelled val.) | " if labelled else "")
           + "best Dice (upper bound) | AUROC | AUPRC | lesions found | FP comp./scan | "
           "trained on | train time |",
           "| --- | --- | ---: | ---: | " + ("---: | " if labelled else "")
           + "---: | ---: | ---: | ---: | ---: | --- | ---: |"]
  for result in results:
    for group, m in result["pooled"].items():
      minutes = result["train_seconds"] / 60
      if group != "all" and m["num_volumes"] == result["pooled"]["all"]["num_volumes"]:
        continue  # a single kind of anomaly: its row repeats "all"
      labelled_dice = (f"{m[LABELLED]['dice']:.3f} | "
                       if LABELLED in m else "n/a | ") if labelled else ""
      adaptive_dice = f"{m[scan_adaptive]['dice']:.3f}" if scan_adaptive in m else "n/a"
      fp_per_scan = m["false_positive_components"] / max(m["num_volumes"], 1)
      lines.append(f"| {result['config']} | {group} ({m['num_volumes']}) | {m['dice']:.3f} | "
                   f"{adaptive_dice} | "
                   f"{labelled_dice}{m['best_dice_upper_bound']:.3f} | {m['auroc']:.3f} | "
                   f"{m['auprc']:.3f} | {m['lesion_sensitivity']:.2f} | {fp_per_scan:.1f} | "
                   f"{result['protocol']['train_slices']} slices | "
                   f"{minutes:.1f} min |")
  return "\n".join(lines) + "\n"


def comparison_figures(specs: list[str], workdirs: list[str], overrides: list[str],
                       results: list[dict], output_stem: str, num_volumes: int) -> list[str]:
  """A per-volume Dice box plot, and `num_volumes` test volumes seen by every model."""
  boxplot = f"{output_stem}_dice_per_volume.png"
  figures.save_dice_boxplot(boxplot, {r["config"]: [m["dice"] for m in r["per_volume"].values()]
                                      for r in results},
                            f"test set {results[0]['test_dataset']}: Dice at the healthy threshold")
  # The volumes: spread over the intensity baseline's (else the first model's) Dice ranking.
  reference = next((r for r in results if r["model"] == "threshold"), results[0])
  ranked = sorted(reference["per_volume"], key=lambda s: reference["per_volume"][s]["dice"])
  chosen = [ranked[int(i)] for i in np.linspace(0, len(ranked) - 1, num_volumes)]
  rows = {}
  for spec, workdir in zip(specs, workdirs, strict=True):
    config = config_lib.load(spec, overrides_for(spec, overrides))
    for volume, anomaly, prediction, threshold in _trained_maps(config, workdir, chosen):
      truth = volume.anomaly_mask[..., 0]
      k = int(np.argmax(truth.sum(axis=(1, 2))))
      row = rows.setdefault(volume.subject_id, {
          "title": f"{volume.subject_id}\nslice {k}", "image": volume.image[k, ..., 0],
          "truth": truth[k]})
      row[spec] = {"anomaly_map": anomaly[k], "prediction": prediction[k],
                   "threshold": threshold}
  patients = f"{output_stem}_volumes.png"
  figures.save_model_comparison(patients, [rows[s] for s in chosen if s in rows], specs)
  return [boxplot, patients]


def _trained_maps(config, workdir: str, subject_ids: list[str]):
  """(volume, anomaly map, prediction, threshold) of the named test volumes, as eval made them."""
  threshold = workdir_lib.model_threshold(workdir).value
  scorer, state, _ = scoring.restore_scorer(config, workdir)
  builder = evaluation.test_split_builder(config, input_pipeline.get_builder(config.dataset))
  for volume in evaluation.test_volumes(builder, config.eval.test_splits,
                                        standardization.for_run(config, workdir)):
    if volume.subject_id in subject_ids:
      anomaly = scoring.anomaly_maps(scorer, state, volume, config.eval.postprocess)[1]
      prediction = postprocess.clean_prediction(anomaly > threshold,
                                                config.eval.postprocess.min_component_size)
      yield volume, anomaly, prediction, threshold


def compare():
  workdirs = [os.path.join(FLAGS.workdir_root, spec.replace(":", "_")) for spec in FLAGS.configs]
  results = [run_one(spec, workdir, FLAGS.override)
             for spec, workdir in zip(FLAGS.configs, workdirs, strict=True)]
  title = FLAGS.title or f"{results[0]['dataset']} (test: {results[0]['test_dataset']})"
  table = markdown_table(results, title)
  command = "python -m brainseg_jax.compare " + shlex.join(sys.argv[1:])
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  stem = os.path.splitext(FLAGS.output)[0]
  pngs = (comparison_figures(FLAGS.configs, workdirs, FLAGS.override, results, stem,
                             FLAGS.figure_volumes) if FLAGS.figure_volumes else [])
  links = "".join(f"\n![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in pngs)
  atomic.write_text(FLAGS.output, f"{table}{links}\nMade by `{command}`.\n")
  logging.info("wrote %s", FLAGS.output)
  print(table)


def main():
  flags.DEFINE_list("configs", ["threshold", "ae", "vae", "dae", "fanogan"],
                    "Config names in configs/ (optionally name:variant).")
  flags.DEFINE_multi_string("override", [], "key=value applied to every config, e.g. "
                            "dataset.resolution=64; name:key=value to one config only, e.g. "
                            "fanogan:model.gan_steps=500.")
  flags.DEFINE_string("workdir_root", "runs/compare", "One workdir per config under this folder.")
  flags.DEFINE_string("output", "runs/compare/results.md", "Markdown file to write.")
  flags.DEFINE_string("title", "", "Heading of the table (default: the dataset).")
  flags.DEFINE_integer("figure_volumes", 4, "Test volumes in the every-model figure (0: no "
                       "figures); a Dice box plot is drawn beside it.")
  cli.define_device_flags()
  cli.run(compare)


if __name__ == "__main__":
  main()
