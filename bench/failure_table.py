"""Every bad input and bad config we know of, run for real: what does the user see?

    python bench/failure_table.py --output=docs/failure_table.md [--data_dir=DIR]

Trains one smoke VAE (the workdir the bad inputs are tried against, and copies of
it broken in one way each: an edited threshold or saved config, NaN parameters), builds
the bad files in a temporary folder, runs each command as a user would, and
writes a Markdown table: the case, the command, the exit status, the number of
lines on stderr, whether a traceback showed, and the last line printed. The
regression tests for each of these live in tests/; this is the overview.
"""

import argparse
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

SMOKE = ["launch.py", "--config=configs/vae.py:smoke"]


def _save(path, data, spacing=2.0):
  nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.diag([spacing] * 3 + [1.0])), path)
  return path


def bad_files(folder: pathlib.Path, good_scan: pathlib.Path) -> dict[str, pathlib.Path]:
  """Bad scans and folders, each made from scratch or from a good scan."""
  rng = np.random.default_rng(0)
  volume = rng.random((60, 60, 50)) + 1.0
  (folder / "empty_folder").mkdir()
  (folder / "truncated.nii.gz").write_bytes(good_scan.read_bytes()[:4000])
  (folder / "not_nifti.nii.gz").write_bytes(b"this is not a NIfTI file")
  (folder / "a_file").write_text("")
  nan = volume.copy()
  nan[10:20, 10:20, 10:20] = np.nan
  from tests.data_prep.test_load_header import _header_only

  _header_only(folder / "bomb.nii.gz", (2000, 2000, 2000), 0.1)
  _header_only(folder / "wide.nii.gz", (64, 64, 64), 10.0)
  _header_only(folder / "huge_voxels.nii.gz", (64, 64, 40), 50.0)
  for name, rows in (("zero_sform", 0.0), ("nan_sform", np.nan)):
    _save(folder / f"{name}.nii", volume)
    raw = bytearray((folder / f"{name}.nii").read_bytes())
    raw[252:256] = np.array([0, 1], np.int16).tobytes()  # qform_code 0, sform_code 1
    raw[280:328] = np.full(12, rows, np.float32).tobytes()  # srow_x, srow_y, srow_z
    (folder / f"{name}.nii").write_bytes(bytes(raw))
  affine = np.diag([2.0, 2.0, 2.0, 1.0])
  rgb = np.zeros((60, 60, 50), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
  nib.save(nib.Nifti1Image(rgb, affine), str(folder / "rgb.nii.gz"))
  nib.save(nib.Nifti1Image(np.ones((60, 60, 50), np.complex64), affine),
           str(folder / "complex.nii.gz"))
  _save(folder / "code.nii", volume)
  raw = bytearray((folder / "code.nii").read_bytes())
  raw[70:72] = np.int16(9999).tobytes()
  (folder / "code.nii").write_bytes(bytes(raw))
  mixed = folder / "mixed"
  mixed.mkdir()
  for name in ("bomb.nii.gz", "rgb.nii.gz", "code.nii", "zero_sform.nii"):
    shutil.copy(folder / name, mixed / name)
  shutil.copy(good_scan, mixed / "good.nii.gz")
  return {
      "good": good_scan,
      "empty_folder": folder / "empty_folder",
      "truncated": folder / "truncated.nii.gz",
      "not_nifti": folder / "not_nifti.nii.gz",
      "four_d": _save(folder / "four_d.nii.gz", rng.random((20, 20, 20, 3)) + 1),
      "zeros": _save(folder / "zeros.nii.gz", np.zeros((60, 60, 50))),
      "nan": _save(folder / "nan.nii.gz", nan),
      "tiny": _save(folder / "tiny.nii.gz", volume[:8, :8, :8], spacing=1.0),
      "mask_shape": _save(folder / "mask_shape.nii.gz", np.ones((10, 10, 10))),
      "a_file": folder / "a_file",
      **{name: folder / f"{name}.nii.gz" for name in ("bomb", "wide", "huge_voxels", "rgb",
                                                       "complex")},
      **{name: folder / f"{name}.nii" for name in ("zero_sform", "nan_sform", "code")},
      "mixed": mixed,
  }


def cases(workdir, files, tmp) -> list[tuple[str, list[str]]]:
  predict = ["-m", "brainseg_jax.predict", f"--workdir={workdir}"]
  out = f"--output_dir={tmp / 'out'}"
  eval_ = ["-m", "brainseg_jax.eval", "--config=configs/vae.py:smoke"]

  def broken(name):  # predict on the good scan with the workdir tmp/name (a broken copy)
    return ["-m", "brainseg_jax.predict", f"--workdir={tmp / name}", f"--input={files['good']}",
            out]
  return [
      ("config: unknown key", [*SMOKE, "--config.model.chanels=(8,16)"]),
      ("config: value of the wrong type", [*SMOKE, "--config.batch_size=abc"]),
      ("config: malformed tuple", [*SMOKE, "--config.model.channels=(8,16"]),
      ("config: file missing", ["launch.py", "--config=configs/no_such.py"]),
      ("config: unknown variant", ["launch.py", "--config=configs/vae.py:fast"]),
      ("config: unknown model", [*SMOKE, "--config.model.name=gan"]),
      ("config: unknown dataset", [*SMOKE, "--config.dataset.name=nope"]),
      ("config: batch not divisible by devices", [*SMOKE, "--config.batch_size=6"]),
      ("config: resolution not divisible", [*SMOKE, "--config.dataset.resolution=36"]),
      ("config: warm-up longer than training", [*SMOKE, "--config.warmup_steps=500"]),
      ("config: checkpoint_every_steps=0", [*SMOKE, "--config.checkpoint_every_steps=0"]),
      ("config: log_every_steps=0", [*SMOKE, "--config.log_every_steps=0"]),
      ("config: keep_checkpoints=0", [*SMOKE, "--config.keep_checkpoints=0"]),
      ("config: model.channels=()", [*SMOKE, "--config.model.channels=()"]),
      ("config: eval.residual=bogus (before training)", [*SMOKE, "--config.eval.residual=bogus"]),
      ("config: healthy FPR above 1", [*SMOKE, "--config.eval.healthy_fprs=(1.5,)"]),
      ("config: group norm on 4 channels", [*SMOKE, "--config.model.norm=group",
                                            "--config.model.channels=(4,8,16)"]),
      ("workdir: below a file", [*SMOKE, f"--workdir={files['a_file']}/run"]),
      ("workdir: in use by another run", [*SMOKE, f"--workdir={tmp / 'busy'}"]),
      ("eval: workdir never trained", [*eval_, f"--workdir={tmp / 'untrained'}"]),
      ("eval: latest checkpoint corrupt", [*eval_, f"--workdir={tmp / 'corrupt'}"]),
      ("predict: checkpoint without its config", broken("no_config")),
      ("predict: input missing", [*predict, f"--input={tmp / 'nope.nii.gz'}", out]),
      ("predict: empty folder", [*predict, f"--input={files['empty_folder']}", out]),
      ("predict: truncated NIfTI", [*predict, f"--input={files['truncated']}", out]),
      ("predict: not a NIfTI file", [*predict, f"--input={files['not_nifti']}", out]),
      ("predict: 4D image", [*predict, f"--input={files['four_d']}", out]),
      ("predict: all-zero image", [*predict, f"--input={files['zeros']}", out]),
      ("predict: NaN voxels", [*predict, f"--input={files['nan']}", out]),
      ("predict: 8x8x8 scan", [*predict, f"--input={files['tiny']}", out]),
      ("predict: brain mask of another shape", [*predict, f"--input={files['good']}",
                                                f"--brain_mask={files['mask_shape']}", out]),
      ("predict: --output_dir is a file", [*predict, f"--input={files['good']}",
                                           f"--output_dir={files['a_file']}"]),
      ("predict: --output_dir below a file", [*predict, f"--input={files['good']}",
                                              f"--output_dir={files['a_file']}/out"]),
      ("predict: --output_dir not writable", [*predict, f"--input={files['good']}",
                                              "--output_dir=/proc/brainseg_out"]),
      ("predict: workdir never trained", broken("untrained")),
      ("predict: header declares 2000^3 voxels (122-byte file)",
       [*predict, f"--input={files['bomb']}", out]),
      ("predict: 64^3 at 10 mm voxels (a 640 mm head)",
       [*predict, f"--input={files['wide']}", out]),
      ("predict: 64x64x40 at 50 mm voxels", [*predict, f"--input={files['huge_voxels']}", out]),
      ("predict: sform all zero", [*predict, f"--input={files['zero_sform']}", out]),
      ("predict: sform NaN", [*predict, f"--input={files['nan_sform']}", out]),
      ("predict: RGB24 voxels", [*predict, f"--input={files['rgb']}", out]),
      ("predict: complex voxels", [*predict, f"--input={files['complex']}", out]),
      ("predict: datatype code 9999", [*predict, f"--input={files['code']}", out]),
      ("predict: folder of each bad kind and a good scan",
       [*predict, f"--input={files['mixed']}", out]),
      ("predict: --cpu_devices=0", [*predict, f"--input={files['good']}", out,
                                    "--cpu_devices=0"]),
      ("predict: both --workdir and --model", [*predict, "--model=lgg_flair_threshold",
                                               f"--input={files['good']}", out]),
      ("predict: unknown --model", ["-m", "brainseg_jax.predict", "--model=nope",
                                    f"--input={files['good']}", out]),
      ("predict: threshold NaN in metrics.json", broken("nan_threshold")),
      ("predict: threshold a string in metrics.json", broken("text_threshold")),
      ("predict: metrics.json truncated", broken("truncated_metrics")),
      ("predict: threshold set on a checkpoint no longer there", broken("other_step")),
      ("predict: saved config eval.residual=bogus", broken("bogus_residual")),
      ("predict: saved config median_filter_size=999", broken("huge_median")),
      ("predict: saved config min_component_size='x'", broken("text_component")),
      ("predict: checkpoint with NaN parameters", broken("nan_params")),
      ("calibrate: --cpu_devices=0", ["-m", "brainseg_jax.calibrate", f"--workdir={workdir}",
                                      f"--healthy={files['empty_folder']}", "--cpu_devices=0"]),
      ("build: unknown dataset", ["-m", "brainseg_jax.build", "--dataset=nope"]),
      ("build: manual_dir missing", ["-m", "brainseg_jax.build", "--dataset=ixi",
                                     f"--manual_dir={tmp / 'nope'}"]),
  ]


def _edit_json(path: pathlib.Path, edit):
  record = json.loads(path.read_text())
  edit(record)
  path.write_text(json.dumps(record))


def prepare_workdirs(trained: pathlib.Path, tmp: pathlib.Path):
  """Copies of the trained run, each broken in one way."""
  edits = {
      "nan_threshold": ("metrics.json", lambda m: m["protocol"].update(threshold=float("nan"))),
      "text_threshold": ("metrics.json", lambda m: m["protocol"].update(threshold="0.3")),
      "other_step": ("metrics.json", lambda m: m.update(checkpoint_step=45)),
      "bogus_residual": ("checkpoints/60/config/metadata",
                         lambda c: c["eval"].update(residual="bogus")),
      "huge_median": ("checkpoints/60/config/metadata",
                      lambda c: c["eval"]["postprocess"].update(median_filter_size=999)),
      "text_component": ("checkpoints/60/config/metadata",
                         lambda c: c["eval"]["postprocess"].update(min_component_size="x")),
  }
  for name, (file_name, edit) in edits.items():
    shutil.copytree(trained, tmp / name)
    _edit_json(tmp / name / file_name, edit)
  shutil.copytree(trained, tmp / "truncated_metrics")
  metrics = tmp / "truncated_metrics" / "metrics.json"
  metrics.write_text(metrics.read_text()[:40])
  _nan_parameters(trained, tmp / "nan_params")
  shutil.copytree(trained, tmp / "corrupt")
  for path in (tmp / "corrupt" / "checkpoints" / "60" / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:10])
  shutil.copytree(trained, tmp / "no_config")
  shutil.rmtree(tmp / "no_config" / "checkpoints" / "60" / "config")
  (tmp / "busy").mkdir()


def _nan_parameters(trained: pathlib.Path, target: pathlib.Path):
  """A copy whose evaluated checkpoint holds NaN parameters (a diverged training)."""
  shutil.copytree(trained, target)
  script = ("import sys, jax, numpy as np\n"
            "from brainseg_jax import checkpoints\n"
            "from brainseg_jax.models import create_model\n"
            "workdir = sys.argv[1]\n"
            "config = checkpoints.saved_config(workdir)\n"
            "state, _ = checkpoints.restore_trained(config, workdir, create_model(config))\n"
            "params = jax.tree.map(lambda p: p * np.nan, state.params)\n"
            "nan = state.replace(step=90, params=params)\n"
            "c = checkpoints.Checkpointer(workdir)\n"
            "c.save(90, nan, config.to_dict()); c.wait_until_finished(); c.close()\n")
  subprocess.run([sys.executable, "-c", script, str(target)], cwd=ROOT, check=True,
                 env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)
  _edit_json(target / "metrics.json", lambda m: m.update(checkpoint_step=90))


def run(args, data_dir) -> subprocess.CompletedProcess:
  command = [sys.executable, *args]
  if args[0] == "launch.py" or "brainseg_jax.eval" in args:
    command.append(f"--config.dataset.data_dir={data_dir}")
  return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                        env={**os.environ, "PYTHONPATH": str(ROOT)})


def table(rows) -> str:
  lines = ["# What the user sees: every bad input and config tried", "",
           "Made by `python bench/failure_table.py`, each case run as a command against a "
           "trained smoke VAE. Exit status 1, one line on stderr and no traceback is the "
           "standard (2 would be a bug, said as one); for a folder, a bad scan is skipped and "
           "counted instead.", "",
           "| case | exit | stderr lines | traceback | what the user sees (last line) |",
           "| --- | ---: | ---: | --- | --- |"]
  for name, result in rows:
    err = [line for line in result.stderr.strip().splitlines() if line.strip()]
    last = (err[-1] if err else "").replace("|", "\\|")
    traceback = "yes" if "Traceback" in result.stderr else "no"
    lines.append(f"| {name} | {result.returncode} | {len(err)} | {traceback} | `{last}` |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=os.environ.get("BRAINSEG_DATA_DIR", ""))
  parser.add_argument("--good_scan", default=str(ROOT.parent / "shared" / "data" / "elderly_flair"
                                                 / "flair" / "Subj1_FL.nii.gz"))
  parser.add_argument("--output", default="docs/failure_table.md")
  args = parser.parse_args()
  data_dir = args.data_dir or os.path.expanduser("~/tensorflow_datasets")
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="failure_table_"))
  trained = tmp / "trained"
  result = run([*SMOKE, f"--workdir={trained}"], data_dir)
  assert result.returncode == 0, result.stderr[-2000:]
  prepare_workdirs(trained, tmp)
  files = bad_files(tmp, pathlib.Path(args.good_scan))
  rows = []
  with open(tmp / "busy" / ".lock", "a+") as lock:  # held by this process: "busy"
    fcntl.flock(lock, fcntl.LOCK_EX)
    lock.write(str(os.getpid()))
    lock.flush()
    for name, command in cases(trained, files, tmp):
      rows.append((name, run(command, data_dir)))
      print(f"{name}: {rows[-1][1].stderr.strip().splitlines()[-1:] }", flush=True)
  pathlib.Path(args.output).write_text(table(rows))
  shutil.rmtree(tmp)


if __name__ == "__main__":
  main()
