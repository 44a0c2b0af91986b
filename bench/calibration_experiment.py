"""Does calibrating on a few local healthy scans keep the threshold's promise on a new site?

    python bench/calibration_experiment.py --workdir=runs/vae \\
        --scans=../shared/data/elderly_flair --output=docs/calibration.md

A model trained on one dataset (e.g. the built-in synthetic FLAIR) promises that
its threshold flags `healthy_fpr` (1 %) of a healthy brain. On scans of another
site it may flag far more. Every scan of the site goes once through predict's
preprocessing and scoring (`scans.ScanScorer`); its lesion mask (the site's
`wmh/` folder) only marks the voxels that are not healthy. Then, for k in
`--ks` and `--draws` random draws: the threshold is re-derived from the healthy
brain voxels of k scans (what `brainseg_jax.calibrate` does with k healthy
scans), and the fraction of healthy brain voxels it flags on the remaining
scans is measured, against the model's own threshold on the same scans.
"""

import argparse
import glob
import os
import pathlib
import random
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def score_site(workdir: str, scans_dir: str):
  """Per scan: healthy-voxel scores (brain minus lesion), in scan order."""

  from brainseg_jax import scans
  from data_prep import pipeline, qc

  scorer = scans.ScanScorer(workdir)
  healthy = {}
  for path in sorted(glob.glob(os.path.join(scans_dir, "flair", "*.nii.gz"))):
    name = os.path.basename(path).replace("_FL.nii.gz", "")
    mask = os.path.join(scans_dir, "wmh", f"{name}_FL_DLWMLS.nii.gz")
    start = time.time()
    prepared = pipeline.preprocess(path, scorer.prep, anomaly_mask_path=mask)
    problems = qc.problems(prepared.qc, scorer.channels[0])
    if problems:  # as calibrate does: a wrongly registered scan is not a site's healthy scan
      print(f"{name}: left out, registration QC failed: {'; '.join(problems)}", flush=True)
      continue
    volume, _, anomaly = scorer.score(prepared)  # the mask marks lesions; it is not scored
    lesion, brain = volume.anomaly_mask[..., 0], volume.brain_mask[..., 0]
    healthy[name] = anomaly[brain & ~lesion]
    print(f"{name}: {healthy[name].size} healthy brain voxels, {time.time() - start:.0f} s",
          flush=True)
  return healthy


def experiment(healthy, model_threshold, fpr, ks, draws, seed):
  import numpy as np

  from brainseg_jax import metrics

  names = sorted(healthy)
  rng = random.Random(seed)
  flagged = lambda scores, t: float(np.mean(scores > t))
  before = [flagged(healthy[n], model_threshold) for n in names]
  rows = []
  for k in ks:
    after, spread = [], []
    for _ in range(draws):
      chosen = rng.sample(names, k)
      threshold = metrics.threshold_at_fpr(np.concatenate([healthy[n] for n in chosen]), fpr)
      held_out = [flagged(healthy[n], threshold) for n in names if n not in chosen]
      after.append(float(np.mean(held_out)))
      spread.append((min(held_out), max(held_out)))
    rows.append({"k": k, "mean": float(np.mean(after)), "min_draw": min(after),
                 "max_draw": max(after), "worst_scan": max(s[1] for s in spread)})
  return before, rows


def report(args, before, rows, model_threshold, fpr, n_scans) -> str:
  import numpy as np
  lines = ["# Calibration on a new site: fraction of healthy brain voxels flagged", "",
           f"`python bench/calibration_experiment.py --workdir={args.workdir} "
           f"--scans={args.scans} --draws={args.draws}`. The model in `{args.workdir}` promises "
           f"to flag {fpr:.0%} of a healthy brain (its threshold {model_threshold:.4f}, set on its "
           f"own healthy validation split). Measured on the healthy brain voxels (brain mask "
           f"minus the automated lesion mask) of the {n_scans} scans of `{args.scans}`.", "",
           f"**Before calibration** (the model's own threshold): {np.mean(before):.2%} flagged on "
           f"average, {min(before):.2%} to {max(before):.2%} per scan.", "",
           "**After calibration** on k scans (random draws; measured on the other scans):", "",
           "| k scans | flagged, mean over draws | best draw | worst draw | worst single scan |",
           "| ---: | ---: | ---: | ---: | ---: |"]
  for r in rows:
    lines.append(f"| {r['k']} | {r['mean']:.2%} | {r['min_draw']:.2%} | {r['max_draw']:.2%} | "
                 f"{r['worst_scan']:.2%} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--scans", default=str(ROOT.parent / "shared" / "data" / "elderly_flair"))
  parser.add_argument("--ks", default="3,5,8")
  parser.add_argument("--draws", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", default="docs/calibration.md")
  args = parser.parse_args()
  from brainseg_jax import parallel
  parallel.split_host_into_devices()
  from brainseg_jax import workdir as workdir_lib
  model = workdir_lib.model_threshold(args.workdir)
  healthy = score_site(args.workdir, args.scans)
  before, rows = experiment(healthy, model.value, model.healthy_fpr,
                            [int(k) for k in args.ks.split(",")], args.draws, args.seed)
  text = report(args, before, rows, model.value, model.healthy_fpr, len(healthy))
  pathlib.Path(args.output).write_text(text)
  print(text)


if __name__ == "__main__":
  main()
