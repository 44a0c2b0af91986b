"""Checkpoints that cannot be read: one clear line, and a resume that needs no help."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from brainseg_jax import checkpoints
from brainseg_jax.errors import UserError
from brainseg_jax.models import create_model
from configs import vae
from tests.helpers import run

pytestmark = pytest.mark.slow  # trainings and commands in subprocesses


def _saved_steps(workdir, steps=(10, 20)):
  checkpointer = checkpoints.Checkpointer(str(workdir))
  for step in steps:
    checkpointer.save(step, {"w": jnp.full((64, 64), float(step))}, {"model": {"name": "x"}})
  checkpointer.wait_until_finished()
  checkpointer.close()
  return {"w": jnp.zeros((64, 64))}


def _break(step_dir):
  """Truncates every array data file of a checkpoint, as a full disk or a bad copy would."""
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:10])


def test_resume_falls_back_to_the_newest_checkpoint_that_restores(tmp_path, caplog):
  template = _saved_steps(tmp_path)
  _break(tmp_path / "checkpoints" / "20")
  checkpointer = checkpoints.Checkpointer(str(tmp_path))
  state = checkpointer.restore_newest_good(template)
  np.testing.assert_array_equal(state["w"], 10.0)
  assert checkpointer.latest_step() == 10
  # The broken one is kept aside, not deleted, and named in one warning line.
  aside = list((tmp_path / "checkpoints_broken").iterdir())
  assert len(aside) == 1 and aside[0].name.startswith("20-")
  assert any("checkpoints/20 cannot be restored" in r.getMessage() for r in caplog.records)
  checkpointer.close()


def test_when_nothing_restores_the_error_says_so(tmp_path):
  template = _saved_steps(tmp_path)
  for step in (10, 20):
    _break(tmp_path / "checkpoints" / str(step))
  with pytest.raises(UserError, match="no checkpoint in .* can be restored"):
    checkpoints.Checkpointer(str(tmp_path)).restore_newest_good(template)


def test_a_checkpoint_without_its_config_is_a_clear_error(tmp_path):
  _saved_steps(tmp_path)
  shutil.rmtree(tmp_path / "checkpoints" / "20" / "config")
  with pytest.raises(UserError, match="20 has no readable saved config"):
    checkpoints.saved_config(str(tmp_path))


def test_predict_and_eval_on_a_corrupt_latest_checkpoint_print_one_line(vae_smoke_run, tmp_path,
                                                                        data_dir):
  workdir = tmp_path / "run"
  shutil.copytree(vae_smoke_run[0], workdir)
  _break(workdir / "checkpoints" / "60")
  result = run(["-m", "brainseg_jax.eval", "--config=configs/vae.py:smoke",
                f"--workdir={workdir}"], data_dir, check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr[-2000:]
  assert "checkpoints/60 cannot be restored" in result.stderr
  result = run(["-m", "brainseg_jax.predict", f"--workdir={workdir}",
                f"--input={vae_smoke_run[0] / 'nifti' / 'test_001_glioma_reconstruction.nii.gz'}",
                f"--output_dir={tmp_path / 'out'}"], None, check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr[-2000:]


def test_launch_resumes_past_a_corrupt_checkpoint_to_the_same_parameters(vae_smoke_run, tmp_path,
                                                                          data_dir):
  workdir = tmp_path / "run"
  shutil.copytree(vae_smoke_run[0], workdir)
  _break(workdir / "checkpoints" / "60")
  result = run(["launch.py", "--config=configs/vae.py:smoke", f"--workdir={workdir}"], data_dir)
  assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
  assert "checkpoints/60 cannot be restored" in result.stderr
  assert "resumed from step 30" in result.stderr
  assert len(list((workdir / "checkpoints_broken").iterdir())) == 1
  # Retrained from step 30 to the very parameters of the uninterrupted run.
  config = vae.get_config("smoke")
  model = create_model(config)
  original, _ = checkpoints.restore_trained(config, str(vae_smoke_run[0]), model)
  again, _ = checkpoints.restore_trained(config, str(workdir), model)
  for a, b in zip(jax.tree.leaves(original.params), jax.tree.leaves(again.params), strict=True):
    np.testing.assert_array_equal(a, b)

