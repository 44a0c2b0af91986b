"""A raw scan to its report: where the seconds go, from process start to the last file written.

    python bench/predict_benchmark.py --model=lgg_flair_unet --output=docs/benchmarks_predict.md
    python bench/predict_benchmark.py --workdir=runs/vae [--scans=A.nii.gz,B.nii.gz]

Runs `python -m brainseg_jax.predict`'s own code (`predict.Predictor`) in a fresh
child process, as a user's command would, and times:
  * process start (interpreter up, before any import of ours),
  * imports (brainseg_jax.predict and what it pulls: JAX, Flax, SimpleITK, ...),
  * JAX start (the CPU backend and its devices),
  * restore (threshold, config, checkpoint, the state placed on the devices),
  * each scan, stage by stage from its report (`seconds`): preprocessing (load,
    reorient/resample, N4, registration, output grid + masks + QC), scoring (the
    first scan compiles the scorer), writing NIfTI, report + overlay PNG.
The second scan reuses the compiled scorer, as a folder of scans does: its total
is the warm time per scan. The default scans are the two 1 mm TCGA FLAIR volumes
of ../shared/data (240 x 240 x 155).
Wall seconds; the machine's load average is printed with them, as other jobs
slow every stage.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_DATA = ROOT.parent / "shared" / "data"
DEFAULT_SCANS = [_DATA / "tcga_glioma" / c / f"{c}_fla_bet_normalized.nii.gz"
                  for c in ("TCGA-DU-7294", "OtherEXampleFromTCIA")]

# The child: a user's predict process, instrumented. Wall clock (time.time) is shared
# with the parent, so "process start" is measured from before the child was spawned.
_CHILD = """
import json, sys, time
t = {"python_up": time.time()}
from brainseg_jax import predict
t["imports"] = time.time()
import jax
jax.devices()
t["jax_start"] = time.time()
predictor = predict.Predictor(sys.argv[1])
t["restore"] = time.time()
scans = []
for path in sys.argv[3:]:
  start = time.time()
  written = predictor(path, sys.argv[2])
  seconds = json.load(open(written["report"]))["seconds"]
  scans.append({"scan": path, "total": time.time() - start, "seconds": seconds})
t["end"] = time.time()
print("BENCH" + json.dumps({"t": t, "scans": scans}))
"""


def run(workdir: str, scans: list[str]) -> dict:
  with tempfile.TemporaryDirectory() as out:
    spawned = time.time()
    done = subprocess.run([sys.executable, "-c", _CHILD, workdir, out, *scans], cwd=ROOT,
                          capture_output=True, text=True, check=False)
  if done.returncode != 0:
    raise SystemExit(f"predict failed:\n{done.stderr[-3000:]}")
  line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH"))
  result = json.loads(line[len("BENCH"):])
  t = result["t"]
  result["startup"] = {
      "process start (interpreter)": t["python_up"] - spawned,
      "imports": t["imports"] - t["python_up"],
      "JAX start": t["jax_start"] - t["imports"],
      "restore (threshold, checkpoint, placement)": t["restore"] - t["jax_start"],
  }
  result["wall_total"] = t["end"] - spawned
  result["load_average"] = os.getloadavg()
  return result


# Stage order for the table (reports store their keys sorted).
_PREPROCESS_ORDER = ("load", "reorient, resample", "N4 bias correction", "registration",
                     "to output grid, masks, QC", "extra modalities")
_PREDICT_ORDER = ("preprocess", "score", "write NIfTI", "report, overlay PNG")


def _ordered(keys, order):
  keys = list(keys)
  return [k for k in order if k in keys] + [k for k in keys if k not in order]


def markdown(result: dict, workdir: str) -> str:
  scans = result["scans"]
  names = [pathlib.Path(s["scan"]).name for s in scans]
  head = "| stage | " + " | ".join(f"scan {i + 1}, s" for i in range(len(scans))) + " |"
  rows = [head, "|---|" + "---:|" * len(scans)]
  for stage, seconds in result["startup"].items():
    rows.append(f"| {stage} | {seconds:.2f} |" + " - |" * (len(scans) - 1))
  first = scans[0]["seconds"]
  for stage in _ordered(first["preprocess_stages"], _PREPROCESS_ORDER):
    values = [s["seconds"]["preprocess_stages"].get(stage, 0.0) for s in scans]
    rows.append(f"| preprocess: {stage} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
  for stage in _ordered((k for k in first if k != "preprocess_stages"), _PREDICT_ORDER):
    values = [s["seconds"][stage] for s in scans]
    label = stage + (" (scan 1 compiles the scorer)" if stage == "score" else "")
    rows.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
  rows.append("| **scan total** | " + " | ".join(f"**{s['total']:.2f}**" for s in scans) + " |")
  startup = sum(result["startup"].values())
  return "\n".join([
      f"Model: `{workdir}`; scans: {', '.join(names)}. "
      f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
      f"load average {result['load_average'][0]:.2f} at the end.", "",
      *rows, "",
      f"Process start to the first scan's last file: {startup + scans[0]['total']:.1f} s "
      f"(start-up {startup:.1f} s + scan {scans[0]['total']:.1f} s); a further scan in the same "
      f"run: {scans[-1]['total']:.1f} s. Whole run: {result['wall_total']:.1f} s.", ""])


def page(text: str, command: str) -> str:
  """The markdown page: what was run, then the table of `markdown`."""
  return "\n".join([
      "# predict, end to end: where a scan's seconds go", "",
      f"Made by `{command}` (a fresh predict process over the scans named below, by default "
      "the two 1 mm TCGA FLAIR scans of ../shared/data, 240x240x155; the first compiles the "
      "scorer, the rest reuse it), with nothing else running (the load average counts the "
      "benchmark itself).", "", text])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  which = parser.add_mutually_exclusive_group(required=True)
  which.add_argument("--workdir", help="a trained run (python launch.py ...)")
  which.add_argument("--model", help="a shipped model, by name (predict --model=...)")
  parser.add_argument("--scans", default=",".join(map(str, DEFAULT_SCANS)),
                      help="comma-separated NIfTI scans; the first compiles, the rest are warm")
  parser.add_argument("--output", default="", help="also write the markdown page here")
  args = parser.parse_args()
  scans = [s for s in args.scans.split(",") if s]
  missing = [s for s in scans if not os.path.isfile(s)]
  if missing:
    raise SystemExit(f"no such scan: {missing[0]}")
  workdir = args.workdir
  if args.model:
    from brainseg_jax import pretrained  # noqa: PLC0415  (only to find the shipped model)
    if args.model not in pretrained.names():
      raise SystemExit(f"--model: no shipped model {args.model!r}; shipped: {pretrained.names()}")
    workdir = pretrained.workdir(args.model)  # materialised before the timed child starts
  result = run(workdir, scans)
  text = markdown(result, f"{args.model} (shipped)" if args.model else workdir)
  print(text)
  print(json.dumps(result, indent=1))
  if args.output:
    command = " ".join(["python bench/predict_benchmark.py", *sys.argv[1:]])
    pathlib.Path(args.output).write_text(page(text, command))


if __name__ == "__main__":
  main()
