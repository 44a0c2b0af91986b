"""Small lesions: models trained on LGG, scored on elderly-FLAIR WMH, TCGA gliomas and LGG test.

    python bench/small_lesions.py --root=runs/small_lesions --lgg=DATA/kaggle_3m \\
        --shared=../shared/data --output=docs/results_small_lesions.md

Paths are relative to the repository root (the script runs from there).

Every model learns from the lesion-free slices of the Kaggle LGG training
patients only (configs/*.py:lgg); no elderly-FLAIR and no TCGA scan is seen in
training or threshold setting. Each trained workdir is then evaluated three
times by `brainseg_jax.eval`: on its own LGG test split, on every one of the
23 elderly-FLAIR scans (all splits: the white-matter hyperintensity masks are
the lesions), and on the two TCGA FLAIR gliomas. Thresholds come from the LGG
validation patients: the fixed healthy-FPR one, the per-scan adaptive one
(brainseg_jax/adaptive.py) and the labelled-validation one; the upper bound
is chosen on the test labels. The FLAIR intensity threshold
(configs/threshold.py) is scored by the same commands at each resolution.

Each step is a command line (printed, and listed in the output); a step
whose metrics.json exists is not redone, so the script resumes. The table of
the output is made from those metrics.json files alone.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

@dataclasses.dataclass(frozen=True)
class Model:
  """One row of the tables: how it is trained (or whose checkpoint it re-scores) and on what."""

  config: str  # configs/<config>.py:lgg
  overrides: tuple[str, ...]  # config overrides; `{shared}`, `{lgg}`: the data folders
  title: str
  # The model whose trained checkpoint it re-scores (None: trains its own). Post-processing
  # variants re-score a trained model: their settings are judged by the Dice on the
  # validation patients (in each metrics.json), never on a test set.
  checkpoint_of: str | None = None
  # The test sets whose scans its training saw (pooled models): those cells are left out.
  trained_on: tuple[str, ...] = ()
  # The test set it learns from and whose validation scans set its thresholds (its folder
  # then comes from the overrides); one other than LGG is named in the table.
  validated_on: str = "lgg"


U64 = ("num_train_steps=2400",)  # every 64x64 U-Net: the budget of unet_64
MODELS = {
    "threshold_64": Model("threshold", (), "FLAIR intensity threshold, 64x64"),
    "threshold_64_median3": Model(
        "threshold", ("eval.postprocess.median_filter_size=3",),
        "FLAIR intensity threshold, 64x64, 3x3 median filter", checkpoint_of="threshold_64"),
    "threshold_64_erosion2": Model(
        "threshold", ("eval.postprocess.brain_erosion=2",),
        "FLAIR intensity threshold, 64x64, brain mask eroded by 2 voxels",
        checkpoint_of="threshold_64"),
    "unet_64": Model("unet_dae", U64, "denoising U-Net, 64x64"),
    # The same run from another seed (initialisation, noise, batch order): how far rows move.
    "unet_64_seed1": Model("unet_dae", (*U64, "seed=1"), "denoising U-Net, 64x64, seed 1"),
    "unet_64_median3": Model(
        "unet_dae", (*U64, "eval.postprocess.median_filter_size=3"),
        "denoising U-Net, 64x64, 3x3 median filter", checkpoint_of="unet_64"),
    "unet_64_median3_min10": Model(
        "unet_dae", (*U64, "eval.postprocess.median_filter_size=3",
                     "eval.postprocess.min_component_size=10"),
        "denoising U-Net, 64x64, median 3, components >= 10 voxels", checkpoint_of="unet_64"),
    "unet_64_erosion2": Model(
        "unet_dae", (*U64, "eval.postprocess.brain_erosion=2"),
        "denoising U-Net, 64x64, brain mask eroded by 2 voxels", checkpoint_of="unet_64"),
    "unet_64_bright75": Model(
        "unet_dae", (*U64, "eval.postprocess.low_intensity_percentile=75.0"),
        "denoising U-Net, 64x64, map kept where FLAIR > its 75th percentile",
        checkpoint_of="unet_64"),
    "unet_64_aug": Model("unet_dae", (*U64, "augment.intensity=True"),
                         "denoising U-Net, 64x64, intensity augmentation"),
    "unet_64_fine": Model("unet_dae", (*U64, "model.fine_noise_resolution=32"),
                          "denoising U-Net, 64x64, + fine noise (32 grid, std 0.1)"),
    # 2.5D: the slice and one neighbour each side in, the centre's map out.
    "unet_64_ctx1": Model(
        "unet_dae", (*U64, "dataset.context_slices=1", "model.slice_noise=shared"),
        "denoising U-Net, 64x64, 2.5D, the same noise on all three slices"),
    "unet_64_ctx1_mixed": Model(
        "unet_dae", (*U64, "dataset.context_slices=1", "model.slice_noise=mixed"),
        "denoising U-Net, 64x64, 2.5D, neighbours' noise partly the centre's"),
    # Leave one dataset out: LGG pooled with every other source but the held-out one.
    "unet_64_pool_tcga": Model(
        "unet_dae", (*U64, 'dataset.pool=("brats_glioma={shared}/tcga_glioma",)'),
        "denoising U-Net, 64x64, LGG + TCGA slices (elderly held out)", trained_on=("tcga",)),
    "unet_64_pool_elderly": Model(
        "unet_dae", (*U64, 'dataset.pool=("elderly_flair={shared}/elderly_flair",)'),
        "denoising U-Net, 64x64, LGG + elderly slices (TCGA held out)",
        trained_on=("elderly",)),
    # The third leg, LGG held out: trained on the other two sources only, thresholds from the
    # elderly validation scans, scored on the LGG test patients.
    "unet_64_pool_nolgg": Model(
        "unet_dae", (*U64, "dataset.name=elderly_flair",
                     "dataset.manual_dir={shared}/elderly_flair",
                     'dataset.pool=("brats_glioma={shared}/tcga_glioma",)',
                     "eval.test_dataset=lgg", "eval.test_manual_dir={lgg}"),
        "denoising U-Net, 64x64, elderly + TCGA slices (LGG held out)",
        trained_on=("elderly", "tcga"), validated_on="elderly"),
    "threshold_128": Model("threshold", ("dataset.resolution=128",),
                           "FLAIR intensity threshold, 128x128"),
    # 128x128 at a quarter of the 64x64 runs' slices (1200 steps of 16, not 2400 of 32):
    # the same pixels seen, in about 30 min on 2 cores.
    "unet_128": Model("unet_dae", ("dataset.resolution=128", "num_train_steps=1200",
                                   "batch_size=16"),
                      "denoising U-Net, 128x128 (1200 steps of batch 16)"),
    # The full budget of the 64x64 runs (2400 steps of 32), about 90 min on 2 cores.
    "unet_128_full": Model("unet_dae", ("dataset.resolution=128", *U64),
                           "denoising U-Net, 128x128 (2400 steps of batch 32)"),
    "unet_128_full_median3": Model(
        "unet_dae", ("dataset.resolution=128", *U64, "eval.postprocess.median_filter_size=3"),
        "denoising U-Net, 128x128 (2400 steps of batch 32), 3x3 median filter",
        checkpoint_of="unet_128_full"),
}
TEST_SETS = {
    "elderly": ("elderly-FLAIR WMH", "elderly_flair", "elderly_flair"),
    "tcga": ("TCGA gliomas", "brats_glioma", "tcga_glioma"),
    "lgg": ("LGG test", None, None),
}
ALL_SPLITS = '("train","validation","test")'
HEADING = "# Small lesions: trained on LGG gliomas, tested on elderly-FLAIR white-matter lesions"
# What follows this line in the output is written by hand and kept when the tables are redone.
MARKER = "<!-- generated above, by hand below -->"


def commands(name: str, root: str, lgg: str, shared: str) -> list[tuple[str, list[str]]]:
  """(workdir, argv) of each step of one model: train (+ LGG test), then the other test sets."""
  model = MODELS[name]
  settings = [f"--config=configs/{model.config}.py:lgg",
              *([f"--config.dataset.manual_dir={lgg}"] if model.validated_on == "lgg" else []),
              "--config.eval.write_nifti=False",
              *(f"--config.{o.format(shared=shared, lgg=lgg)}" for o in model.overrides)]
  evaluate = [sys.executable, "-m", "brainseg_jax.eval", *settings]
  steps = []
  for test_set, (_, dataset, folder) in TEST_SETS.items():
    if test_set in model.trained_on:
      continue
    workdir = os.path.join(root, name, test_set)
    if dataset is None:  # the model's own LGG test split
      train = model.checkpoint_of is None
      steps.insert(0, (workdir, [*([sys.executable, "launch.py", *settings] if train
                                   else evaluate), f"--workdir={workdir}"]))
      continue
    steps.append((workdir, [*evaluate, f"--workdir={workdir}",
                            f"--config.eval.test_dataset={dataset}",
                            f"--config.eval.test_manual_dir={os.path.join(shared, folder)}",
                            f"--config.eval.test_splits={ALL_SPLITS}"]))
  return steps


def run(name: str, root: str, lgg: str, shared: str) -> list[str]:
  """Runs the missing steps of one model; returns every step's command."""
  done = []
  steps = commands(name, root, lgg, shared)
  checkpoint_of = MODELS[name].checkpoint_of
  trained = os.path.join(root, checkpoint_of or name, "lgg")
  for workdir, argv in steps:
    done.append(shlex.join(argv[1:]))
    if os.path.exists(os.path.join(workdir, "metrics.json")):
      continue
    if workdir != trained:  # evaluate a copy: the trained workdir keeps its LGG metrics
      if not os.path.exists(os.path.join(trained, "config.json")):
        sys.exit(f"{name} evaluates the checkpoint of {checkpoint_of or name}: run it first "
                 f"({trained} has none)")
      os.makedirs(workdir, exist_ok=True)
      for item in ("checkpoints", "config.json", "train_time.json"):
        source, target = os.path.join(trained, item), os.path.join(workdir, item)
        if os.path.exists(source) and not os.path.exists(target):
          (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, target)
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, cwd=ROOT, check=True)
  return done


def _row(metrics: dict) -> dict:
  pooled = metrics["pooled"]["all"]
  fpr = metrics["protocol"]["healthy_fprs"][0]
  adaptive = pooled.get(f"adaptive_fpr_{fpr:g}", {})
  labelled = pooled.get("labelled_validation", {})
  return {"dice": pooled["dice"], "adaptive": adaptive.get("dice"),
          "labelled": labelled.get("dice"),
          "best": pooled["best_dice_upper_bound"], "auroc": pooled["auroc"],
          "auprc": pooled["auprc"], "found": pooled["lesion_sensitivity"],
          "fp": pooled["false_positive_components"] / pooled["num_volumes"],
          "volumes": pooled["num_volumes"],
          "validation": metrics["protocol"].get("validation_best_dice")}


def _cell(value, digits=3):
  return "n/a" if value is None else f"{value:.{digits}f}"


def table(root: str, names: list[str]) -> tuple[str, dict]:
  """The Markdown tables (summary, then one per test set) and {name: {test set: row}}."""
  rows = {}
  for name in names:
    for test_set in TEST_SETS:
      path = os.path.join(root, name, test_set, "metrics.json")
      if os.path.exists(path):
        with open(path) as f:
          rows.setdefault(name, {})[test_set] = _row(json.load(f))
  lines = ["| model | " + " | ".join(f"{TEST_SETS[t][0]}: Dice / AUPRC" for t in TEST_SETS)
           + " | LGG validation: best Dice |", "| --- |" + " ---: |" * (len(TEST_SETS) + 1)]
  for name in rows:
    cells = [f"{_cell(r['dice'])} / {_cell(r['auprc'])}" if (r := rows[name].get(t))
             else "trained on" if t in MODELS[name].trained_on else "-" for t in TEST_SETS]
    validation = _cell(rows[name]["lgg"]["validation"]) if "lgg" in rows[name] else "-"
    if MODELS[name].validated_on != "lgg":
      validation += f" ({MODELS[name].validated_on} validation)"
    cells.append(validation)
    lines.append(f"| {MODELS[name].title} (`{name}`) | " + " | ".join(cells) + " |")
  out = "\n".join(lines) + "\n"
  for test_set, (title, _, _) in TEST_SETS.items():
    out += (f"\n## {title}\n\n| model | scans | Dice | Dice (adaptive) | Dice (labelled val.) | "
            "best Dice (upper bound) | AUROC | AUPRC | lesions found | FP comp./scan |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    for name in rows:
      if (r := rows[name].get(test_set)):
        out += (f"| `{name}` | {r['volumes']} | {_cell(r['dice'])} | {_cell(r['adaptive'])} | "
                f"{_cell(r['labelled'])} | {_cell(r['best'])} | {_cell(r['auroc'])} | "
                f"{_cell(r['auprc'])} | {_cell(r['found'], 2)} | {_cell(r['fp'], 1)} |\n")
  return out, rows


def outcome(rows: dict) -> str:
  """The one line a script reads: the best learned model on elderly WMH against thresholding."""
  elderly = {name: r["elderly"] for name, r in rows.items() if "elderly" in r}
  learned = {n: r for n, r in elderly.items() if not n.startswith("threshold")}
  baseline = {n: r for n, r in elderly.items() if n.startswith("threshold")}
  if not learned or not baseline:
    return "elderly FLAIR WMH: not measured"
  best = max(learned, key=lambda n: learned[n]["dice"])
  # The threshold row of the same protocol: its resolution, and its post-processing if there
  # is such a row (unet_64_erosion2 -> threshold_64_erosion2), else none.
  _, resolution, *setting = best.split("_")
  same = f"threshold_{'_'.join([resolution, *setting])}"
  reference = baseline.get(same) or baseline.get(f"threshold_{resolution}")
  if reference is None:
    return f"elderly FLAIR WMH: no threshold row at {resolution}x{resolution}"
  return (f"elderly FLAIR WMH: best learned {best} Dice **{learned[best]['dice']:.3f}** AUPRC "
          f"**{learned[best]['auprc']:.3f}**; threshold Dice **{reference['dice']:.3f}** AUPRC "
          f"**{reference['auprc']:.3f}**")


# The 2D U-Net against the 2.5D ones on one LGG test slice: (run, caption) of each strip.
FIGURE_RUNS = (("unet_64", "2D U-Net (unet_64): the tumour is removed"),
               ("unet_64_ctx1", "2.5D, the same noise on 3 slices (unet_64_ctx1): partly kept"),
               ("unet_64_ctx1_mixed", "2.5D, mixed noise (unet_64_ctx1_mixed): most of it kept"))


def strips_figure(root: str, output: str, row: int = 1, rows: int = 4) -> None:
  """Row `row` of each FIGURE_RUNS run's LGG anomaly_maps.png, one strip under another.

  Every run's figure shows the same test slices in the same layout (a title
  line, then `rows` equal rows), so a strip is a crop of it.
  """
  from PIL import Image, ImageDraw  # matplotlib's dependency

  images = [Image.open(os.path.join(root, name, "lgg", "anomaly_maps.png")).convert("RGB")
            for name, _ in FIGURE_RUNS]
  width, height = images[0].size
  title = height // 25  # the column titles above the first row
  step = (height - title) // rows
  caption = 34
  out = Image.new("RGB", (width, title + len(images) * (caption + step)), "white")
  out.paste(images[0].crop((0, 0, width, title)), (0, 0))
  draw = ImageDraw.Draw(out)
  for i, (image, (_, text)) in enumerate(zip(images, FIGURE_RUNS, strict=True)):
    top = title + i * (caption + step)
    draw.text((60, top + 8), text, fill="black", font_size=22)
    out.paste(image.crop((0, title + row * step, width, title + (row + 1) * step)),
              (0, top + caption))
  out.save(output, optimize=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--root", default="runs/small_lesions")
  parser.add_argument("--lgg", required=True, help="the Kaggle download's kaggle_3m folder")
  parser.add_argument("--shared", default="../shared/data")
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--output", default="docs/results_small_lesions.md")
  parser.add_argument("--table_only", action="store_true", help="write the output from the "
                      "metrics already there, run nothing")
  parser.add_argument("--figure", default="", help="also write the 2D against 2.5D strips "
                      "(FIGURE_RUNS) to this PNG")
  args = parser.parse_args()
  names = [n for n in args.models.split(",") if n]
  unknown = [n for n in names if n not in MODELS]
  if unknown:
    sys.exit(f"unknown --models {unknown}: expected some of {', '.join(MODELS)}")
  os.chdir(ROOT)  # paths are taken from the repository root, as the listed commands run
  root = args.root
  steps = {}
  for name in names:
    steps[name] = ([shlex.join(argv[1:]) for _, argv in commands(name, root, args.lgg, args.shared)]
                   if args.table_only else run(name, root, args.lgg, args.shared))
  tables, rows = table(root, names)
  lines = outcome(rows)
  listing = "\n".join(f"- `{name}`:\n" + "\n".join(f"  - `{c}`" for c in cs)
                      for name, cs in steps.items())
  text = (f"{HEADING}\n\n{lines}\n\n{tables}\nThe commands (run by `python "
          f"bench/small_lesions.py {' '.join(sys.argv[1:])}`):\n\n{listing}\n")
  output = pathlib.Path(args.output)
  notes = output.read_text().partition(MARKER)[2] if output.exists() else ""
  output.write_text(f"{text}\n{MARKER}{notes or chr(10)}")
  if args.figure:
    strips_figure(root, args.figure)
  print(text)


if __name__ == "__main__":
  main()
