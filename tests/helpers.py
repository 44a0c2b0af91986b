"""Helpers the tests share (fixtures are in conftest.py)."""

import os
import pathlib
import subprocess
import sys

import numpy as np

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent


def as_batch(images, brain_mask=None) -> dict:
  """A train-step batch from images (B, H, W, 1); the brain is every voxel unless given."""
  if brain_mask is None:
    brain_mask = np.ones(np.shape(images), bool)
  return {"image": images, "brain_mask": brain_mask}


def run(args, data_dir, timeout=600, check=True):
  """Runs `python <args>` from the project root, with the session's dataset dir."""
  command = [sys.executable, *args]
  if data_dir is not None:
    command.append(f"--config.dataset.data_dir={data_dir}")
  result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def predict(workdir, input_path, output_dir, check=True):
  """`python -m brainseg_jax.predict` on a workdir."""
  return run(["-m", "brainseg_jax.predict", f"--workdir={workdir}", f"--input={input_path}",
              f"--output_dir={output_dir}"], None, check=check)


def three_channel_config(score_channels=()):
  """The VAE's config on FLAIR + T1 + T1c, scored on `score_channels` (empty: all three)."""
  from configs import vae

  config = vae.get_config()
  config.dataset.modalities = ("flair", "t1", "t1c")
  config.eval.score_channels = score_channels
  return config


def finds_the_lesion(prediction_path, lesion_path):
  """Most of the sample's glioma flagged, and little else."""
  import nibabel as nib

  prediction = nib.load(prediction_path).get_fdata() > 0
  lesion = nib.load(lesion_path).get_fdata() > 0
  assert prediction.shape == lesion.shape
  assert prediction[lesion].mean() > 0.3, prediction[lesion].mean()
  assert prediction[~lesion].mean() < 0.01, prediction[~lesion].mean()
