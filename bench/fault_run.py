"""Kill a smoke run at random moments; every resumed run must end as the uninterrupted one.

    python bench/fault_run.py --kills=20 --output=docs/fault_run.md [--data_dir=DIR]

First one uninterrupted `launch.py --config=configs/vae.py:smoke` is the
reference. Then, `--kills` times: a fresh workdir, the same command killed
with SIGKILL at a moment drawn uniformly over 90 % of the reference's duration
(so in training, in checkpointing or in evaluation; halved until the run is
still going at that moment), then the command again until it
finishes. Each trial passes when the final parameters equal the reference's
bit for bit, and the metrics (but their wall-clock "seconds"), per_volume.csv,
summary.md, every NIfTI map's voxels and every figure's pixels are equal too,
and no file under a final name is truncated. The Markdown report lists each
trial: when it was killed, what the run was doing, and what differed.
"""

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def _command(workdir, data_dir):
  return [sys.executable, "launch.py", "--config=configs/vae.py:smoke", f"--workdir={workdir}",
          f"--config.dataset.data_dir={data_dir}"]


def _env():
  return {**os.environ, "PYTHONPATH": str(ROOT)}


def run_to_end(workdir, data_dir) -> float:
  start = time.time()
  subprocess.run(_command(workdir, data_dir), cwd=ROOT, check=True, capture_output=True,
                 env=_env())
  return time.time() - start


def run_and_kill(workdir, data_dir, after_seconds: float) -> str:
  """Starts the run, kills it after `after_seconds`; returns what it was doing then."""
  log = open(f"{workdir}.log", "w")
  process = subprocess.Popen(_command(workdir, data_dir), cwd=ROOT, stdout=log,
                             stderr=subprocess.STDOUT, env=_env())
  time.sleep(after_seconds)
  if process.poll() is not None:
    return "finished before the kill"
  process.send_signal(signal.SIGKILL)
  process.wait()
  log.close()
  return _phase(pathlib.Path(workdir))


def _phase(workdir: pathlib.Path) -> str:
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())
  if not steps:
    return "training, before the first checkpoint"
  if steps[-1] < 60:
    return f"training, after checkpoint {steps[-1]}"
  figures = len(list((workdir / "figures").glob("*.png")))
  return f"evaluating ({figures} of 10 volume figures written)"


def truncated_outputs(workdir: pathlib.Path) -> list[str]:
  """Files under their final names (not checkpoints) that do not load in full."""
  bad = []
  for path in workdir.rglob("*"):
    if not path.is_file() or path.name.startswith(".") or "checkpoints" in path.parts:
      continue
    try:
      if path.suffix == ".png":
        _pixels(path)
      elif path.suffix == ".json":
        json.loads(path.read_text())
      elif path.name.endswith(".nii.gz"):
        np.asarray(nib.load(path).dataobj)
    except Exception:  # any failure to load is what this looks for
      bad.append(f"truncated {path.relative_to(workdir)}")
  return bad


def parameters(workdir):
  from brainseg_jax import checkpoints
  from brainseg_jax.models import create_model
  from configs import vae
  config = vae.get_config("smoke")
  state, step = checkpoints.restore_trained(config, str(workdir), create_model(config))
  import jax
  return step, [np.asarray(leaf) for leaf in jax.tree.leaves(state.params)]


def differences(workdir: pathlib.Path, reference: pathlib.Path) -> list[str]:
  """What differs from the reference run (empty: nothing)."""
  found = []
  step, params = parameters(workdir)
  ref_step, ref_params = parameters(reference)
  if step != ref_step or any(not np.array_equal(a, b) for a, b in zip(params, ref_params,
                                                                      strict=True)):
    found.append("parameters")
  from brainseg_jax import workdir as workdir_lib
  metrics, ref_metrics = (workdir_lib.read_metrics(str(d)) for d in (workdir, reference))
  metrics.pop("seconds")
  ref_metrics.pop("seconds")
  if metrics != ref_metrics:
    found.append(workdir_lib.METRICS_FILE)
  for name in ("per_volume.csv", "summary.md"):
    if (workdir / name).read_text() != (reference / name).read_text():
      found.append(name)
  for ref_file in sorted(reference.rglob("*")):
    relative = ref_file.relative_to(reference)
    ours = workdir / relative
    if ref_file.name.endswith(".nii.gz"):
      if not ours.exists() or not np.array_equal(np.asarray(nib.load(ours).dataobj),
                                                 np.asarray(nib.load(ref_file).dataobj)):
        found.append(str(relative))
    elif ref_file.suffix == ".png":
      if not ours.exists() or not np.array_equal(_pixels(ours), _pixels(ref_file)):
        found.append(str(relative))
  return found


def _pixels(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGBA"))


def report(results, reference_seconds, kills) -> str:
  passed = sum(not r["differences"] for r in results)
  lines = ["# Fault run: a smoke training and its evaluation killed at random moments", "",
           f"`python bench/fault_run.py --kills={kills}`: the reference `launch.py "
           f"--config=configs/vae.py:smoke` took {reference_seconds:.0f} s uninterrupted; each "
           "trial kills the same command (fresh workdir) with SIGKILL at a random moment of "
           "90 % of that span (halved if the run had already finished), then runs it again to "
           "the end and compares with the reference: parameters "
           "bit for bit, the metrics (without their wall-clock seconds), per_volume.csv, "
           "summary.md, the voxels of every NIfTI map and the pixels of every figure.", "",
           f"**{passed} of {len(results)} trials ended identical to the uninterrupted run.**",
           "", "| trial | killed after | what the run was doing | resumed run | differences |",
           "| ---: | ---: | --- | ---: | --- |"]
  for i, r in enumerate(results, 1):
    lines.append(f"| {i} | {r['kill_seconds']:.1f} s | {r['phase']} | {r['resume_seconds']:.0f} s "
                 f"| {', '.join(r['differences']) or 'none'} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--kills", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default=os.environ.get("BRAINSEG_DATA_DIR", ""))
  parser.add_argument("--output", default="docs/fault_run.md")
  args = parser.parse_args()
  data_dir = args.data_dir or os.path.expanduser("~/tensorflow_datasets")
  root = pathlib.Path(tempfile.mkdtemp(prefix="fault_run_"))
  reference = root / "reference"
  run_to_end(reference, data_dir)  # builds the dataset if needed: not timed
  shutil.rmtree(reference)
  reference_seconds = run_to_end(reference, data_dir)
  rng = random.Random(args.seed)
  results = []
  for trial in range(args.kills):
    workdir = root / f"trial_{trial:02d}"
    kill_seconds = rng.uniform(1.0, 0.9 * reference_seconds)
    phase = run_and_kill(workdir, data_dir, kill_seconds)
    while phase == "finished before the kill":  # the machine got faster: kill sooner
      shutil.rmtree(workdir)
      kill_seconds /= 2
      phase = run_and_kill(workdir, data_dir, kill_seconds)
    found = truncated_outputs(workdir)
    resume_seconds = run_to_end(workdir, data_dir)
    found += differences(workdir, reference)
    results.append({"kill_seconds": kill_seconds, "phase": phase,
                    "resume_seconds": resume_seconds, "differences": found})
    print(f"trial {trial + 1}: killed at {kill_seconds:.1f} s ({phase}); "
          f"differences: {found or 'none'}", flush=True)
    shutil.rmtree(workdir)
  text = report(results, reference_seconds, args.kills)
  pathlib.Path(args.output).write_text(text)
  print(text)
  shutil.rmtree(root)
  sys.exit(0 if all(not r["differences"] for r in results) else 1)


if __name__ == "__main__":
  main()
