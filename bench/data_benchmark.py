"""Data preparation speed and registration quality, before and after: docs/benchmarks_data.md.

    python bench/data_benchmark.py --lgg_dir=../data_lgg/kaggle_3m

On the idle machine (about 20 minutes), it measures:
  1. one 1 mm volume (a TCGA FLAIR of ../shared/data, 240 x 240 x 155) preprocessed
     warm, stage by stage, with one SimpleITK thread (a build worker) and with every
     core (predict);
  2. a build of the 184 IXI T1 scans at 64 x 64 (`python -m brainseg_jax.build`, one
     worker per core): wall time, then from its cache each scan's template brain mask
     against the DLMUSE parcellation (Dice) and the registration-QC verdicts;
  3. a build of the 110 Kaggle LGG patients at 64 x 64 (restacking included): wall time
     and QC-flagged count (skipped without --lgg_dir).
Builds go into a fresh --work folder, so nothing is cached. "Before" is the code
at --before_rev (registration version 2): its one-volume timing is measured in the
same run from a git worktree of that revision; its IXI and LGG numbers, which take
half an hour each, are constants measured on this machine (BEFORE).
"""

import argparse
import contextlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import registration_quality  # noqa: E402
from data_prep import cache, pipeline  # noqa: E402
from data_prep.config import PrepConfig  # noqa: E402

_DEFAULT_DATA = ROOT.parent / "shared" / "data"
TARGET_S = 3.0  # one 1 mm volume, warm
_SCAN = ("tcga_glioma", "TCGA-DU-7294", "TCGA-DU-7294_fla_bet_normalized.nii.gz")
# Registration version 2 (SimpleITK's own pyramid on the 1.5 mm working image), this machine,
# 2026-12-07: the IXI numbers of bench/registration_quality.py at 06b9f57 over all 184 scans (two
# workers; other experiments ran beside it part of the time), the LGG build at 64 from its log
# (02:17-02:41, 110 patients, 2 workers).
BEFORE_REV = "06b9f57"
BEFORE = {"ixi_dice_median": 0.9543, "ixi_flagged": ["IXI239", "IXI274", "IXI452"],
          "ixi_preprocessing_min": 24.4, "lgg_build_min": 24.5, "lgg_flagged": 21}

# Run in a worktree of another revision: the same timing as one_volume(), printed as JSON.
_TIME_AT_REVISION = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from data_prep import pipeline
from data_prep.config import PrepConfig
scan, threads, repeats = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pipeline.preprocess(scan, PrepConfig(resolution=32, modality="flair"), threads=threads)
runs = []
for _ in range(repeats):
  start = time.perf_counter()
  result = pipeline.preprocess(scan, PrepConfig(resolution=128, modality="flair"), threads=threads)
  runs.append((time.perf_counter() - start, result.timings))
print(json.dumps(runs))
"""


def one_volume(data: pathlib.Path, threads: int, repeats: int) -> dict:
  scan = data.joinpath(*_SCAN)
  config = PrepConfig(resolution=128, modality="flair")
  pipeline.preprocess(scan, PrepConfig(resolution=32, modality="flair"), threads=threads)  # warm
  runs = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = pipeline.preprocess(scan, config, threads=threads)
    runs.append((time.perf_counter() - start, result.timings))
  return _median_run(runs)


def one_volume_at(revision: str, data: pathlib.Path, threads: int, repeats: int) -> dict:
  """one_volume() with the code of `revision`, from a temporary git worktree."""
  tree = tempfile.mkdtemp(prefix="before_")
  subprocess.run(["git", "worktree", "add", "--detach", tree, revision], cwd=ROOT, check=True,
                 capture_output=True)
  try:
    done = subprocess.run([sys.executable, "-c", _TIME_AT_REVISION, tree,
                           str(data.joinpath(*_SCAN)), str(threads), str(repeats)],
                          capture_output=True, text=True, check=True)
  finally:
    with contextlib.suppress(subprocess.CalledProcessError):
      subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT, check=True,
                     capture_output=True)
  return _median_run(json.loads(done.stdout.strip().splitlines()[-1]))


def _median_run(runs) -> dict:
  runs = sorted(runs, key=lambda r: r[0])
  seconds, stages = runs[len(runs) // 2]
  return {"seconds": round(seconds, 2), "all_seconds": [round(r[0], 2) for r in runs],
          "stages_s": {k: round(v, 2) for k, v in stages.items()}}


def build(dataset: str, manual_dir: str, work: pathlib.Path) -> dict:
  """`python -m brainseg_jax.build` at 64 x 64 into `work`: wall time and its summary lines."""
  start = time.perf_counter()
  done = subprocess.run(
      [sys.executable, "-m", "brainseg_jax.build", f"--dataset={dataset}",
       f"--manual_dir={manual_dir}", "--resolution=64", f"--data_dir={work}",
       "--sheet_subjects=8"], cwd=ROOT, capture_output=True, text=True,
      env={**os.environ, "PYTHONPATH": str(ROOT)})
  wall = time.perf_counter() - start
  if done.returncode:
    raise SystemExit(f"build of {dataset} failed:\n{done.stderr[-3000:]}")
  log = done.stderr
  prep = re.search(r"(\d+) volumes ready .* (\d+) s\n", log)
  flagged = re.search(r"registration QC: (\d+) of (\d+) volumes flagged", log)
  return {"wall_min": round(wall / 60, 2), "volumes": int(prep.group(1)),
          "preprocessing_min": round(int(prep.group(2)) / 60, 2),
          "flagged": int(flagged.group(1)), "of": int(flagged.group(2))}


def ixi_quality(data: pathlib.Path, work: pathlib.Path) -> dict:
  """Per-scan brain-mask Dice and QC verdict from the IXI build's cache."""
  cache_dir = next((work / "prep_cache" / "ixi").iterdir())
  rows = []
  for scan, parcellation in registration_quality.ixi_pairs(data):
    subject = pathlib.Path(scan).name.removesuffix("_T1.nii.gz")
    prepared = cache.load(cache.path_for(str(cache_dir), subject))
    rows.append(registration_quality.scan_row(subject, prepared, parcellation))
  dice = np.array([r["dice"] for r in rows])
  return {"dice_median": round(float(np.median(dice)), 4), "dice_min": round(float(dice.min()), 4),
          "flagged": sorted(r["subject"] for r in rows if r["flagged"]), "scans": rows}


def markdown(r: dict) -> str:
  b = BEFORE
  one, every, before = r["one_volume"], r["one_volume_all_cores"], r["one_volume_before"]
  stages = [f"| {k} | {before['stages_s'].get(k, float('nan')):.2f} | {v:.2f} | "
            f"{every['stages_s'][k]:.2f} |" for k, v in one["stages_s"].items()]
  ixi, ixi_build = r["ixi"], r["ixi_build"]
  lines = [
      "# Data preparation: speed and registration quality",
      "",
      f"Made by `python bench/data_benchmark.py {r['args']}` on the idle 2-core machine "
      f"({r['date']}, load average {r['load']:.2f} at the start, "
      f"{r['runtime_min']:.0f} min; the builds: {r.get('builds_date', r['date'])}). Before: "
      f"the code at {r['before_rev']} (registration version 2), timed in the same run.",
      "",
      f"preprocessing of a 1 mm volume: **{one['seconds']:.1f} s** warm "
      f"(before: {before['seconds']:.1f} s)",
      "",
      f"One TCGA FLAIR scan (240 x 240 x 155, 1 mm) to 128 x 128 slices with QC, median of "
      f"{len(one['all_seconds'])} warm runs ({', '.join(f'{s:.2f}' for s in one['all_seconds'])} s)"
      f" with one SimpleITK thread, as a build worker runs; with every core, as predict "
      f"runs: {every['seconds']:.1f} s.",
      "",
      f"Target: at most {TARGET_S:.0f} s: "
      + ("**reached**" if min(one["seconds"], every["seconds"]) <= TARGET_S else
         "**not reached**") + "; what bounds it: [speed.md](speed.md#data-preparation).",
      "",
      "| stage | before, s | one thread, s | every core, s |",
      "|---|---:|---:|---:|",
      *stages,
      "",
      "## Builds (64 x 64, one worker per core, nothing cached)",
      "",
      "| build | before | now | registration QC flagged |",
      "|---|---:|---:|---|",
      f"| IXI T1, 184 scans | {_minutes(b['ixi_preprocessing_min'])} (preprocessing; other "
      "jobs shared the machine part of the time) | "
      f"{ixi_build['wall_min']:.1f} min (preprocessing {ixi_build['preprocessing_min']:.1f}) | "
      f"{ixi_build['flagged']} of {ixi_build['of']} (before {len(b['ixi_flagged'] or [])}) |",
  ]
  if r.get("lgg_build"):
    lgg = r["lgg_build"]
    lines.append(f"| LGG FLAIR, 110 patients | {b['lgg_build_min']:.1f} min | "
                 f"{lgg['wall_min']:.1f} min (preprocessing {lgg['preprocessing_min']:.1f}) | "
                 f"{lgg['flagged']} of {lgg['of']} (before {b['lgg_flagged']}) |")
  lines += [
      "",
      "## Registration quality on the 184 IXI T1 scans",
      "",
      "The template brain mask carried onto each scan against the DLMUSE parcellation's "
      "label > 0:",
      f"median Dice **{ixi['dice_median']:.4f}** (before {b['ixi_dice_median']}), lowest "
      f"{ixi['dice_min']:.4f}; flagged by registration QC: {', '.join(ixi['flagged']) or 'none'} "
      f"(before: {', '.join(b['ixi_flagged'] or [])}).",
      "",
  ]
  return "\n".join(lines)


def _minutes(value):
  return "-" if value is None else f"{value:.1f} min"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default=os.environ.get("BRAINSEG_SAMPLE_DATA", _DEFAULT_DATA))
  parser.add_argument("--lgg_dir", default="", help="Kaggle LGG kaggle_3m folder; empty: skip")
  parser.add_argument("--work", default="", help="build folder (default: a fresh temporary one)")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--before_rev", default=BEFORE_REV)
  parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks_data.md"))
  parser.add_argument("--results", default="/tmp/data_benchmark.json")
  parser.add_argument("--reuse_builds", action="store_true",
                      help="time the one volume again; take the builds from --results")
  args = parser.parse_args()
  data = pathlib.Path(args.data)
  work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="data_bench_"))
  start = time.time()
  r = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg()[0],
       "args": " ".join([f"--lgg_dir={args.lgg_dir}"] * bool(args.lgg_dir)
                        + [f"--repeats={args.repeats}"] * (args.repeats != 7)),
       "before_rev": args.before_rev}
  if args.reuse_builds:  # the builds (half an hour) from an earlier run of this script
    earlier = json.loads(pathlib.Path(args.results).read_text())
    r.update({k: earlier[k] for k in ("ixi_build", "ixi", "lgg_build", "builds_date",
                                      "args") if k in earlier})
  r["one_volume_before"] = one_volume_at(args.before_rev, data, threads=1, repeats=args.repeats)
  r["one_volume"] = one_volume(data, threads=1, repeats=args.repeats)
  r["one_volume_all_cores"] = one_volume(data, threads=os.cpu_count() or 1, repeats=args.repeats)
  print(json.dumps({k: r[k] for k in ("one_volume_before", "one_volume",
                                      "one_volume_all_cores")}), flush=True)
  if not args.reuse_builds:
    r["builds_date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    r["ixi_build"] = build("ixi", str(data / "ixi_t1"), work / "ixi")
    r["ixi"] = ixi_quality(data, work / "ixi")
    print(json.dumps(r["ixi_build"]), flush=True)
    if args.lgg_dir:
      r["lgg_build"] = build("lgg", args.lgg_dir, work / "lgg")
      print(json.dumps(r["lgg_build"]), flush=True)
  r["runtime_min"] = (time.time() - start) / 60
  pathlib.Path(args.results).write_text(json.dumps(r, indent=1))
  pathlib.Path(args.output).write_text(markdown(r))
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
