"""Every config key is checked before anything expensive runs."""

import re

import pytest

from brainseg_jax import config_checks
from brainseg_jax.errors import UserError
from configs import dae, fanogan, unet_dae, vae
from tests.conftest import run


@pytest.mark.parametrize("key, value, message", [
    ("checkpoint_every_steps", 0, "checkpoint_every_steps=0 is out of range"),
    ("log_every_steps", 0, "log_every_steps=0 is out of range"),
    ("keep_checkpoints", 0, "keep_checkpoints=0 is out of range"),
    ("batch_size", 0, "batch_size=0 is out of range"),
    ("learning_rate", 0.0, "learning_rate=0.0 is out of range"),
    ("model.channels", (), "model.channels=() is out of range"),
    ("model.channels", (8, -16), "model.channels=(8, -16) is out of range"),
    ("model.latent_dim", 0, "model.latent_dim=0 is out of range"),
    ("model.norm", "batch", "unknown model.norm 'batch'"),
    ("model.bottleneck", "sparse", "unknown model.bottleneck 'sparse'"),
    ("eval.residual", "bogus", "unknown eval.residual 'bogus'"),
    ("eval.healthy_fprs", (), "eval.healthy_fprs=() is out of range"),
    ("eval.healthy_fprs", (0.01, 1.5), "eval.healthy_fprs=(0.01, 1.5) is out of range"),
    ("eval.postprocess.median_filter_dims", 4, "median_filter_dims=4 is out of range"),
    ("eval.postprocess.low_intensity_percentile", 100.0, "low_intensity_percentile=100.0"),
    ("eval.test_dataset", "brats", "unknown eval.test_dataset 'brats'"),
    ("eval.num_figure_volumes", -1, "num_figure_volumes=-1 is out of range"),
    ("dataset.name", "nope", "unknown dataset.name 'nope'"),
    ("dataset.train_slices", "healthy", "unknown dataset.train_slices 'healthy'"),
    ("dataset.lesion_margin_slices", -1, "dataset.lesion_margin_slices=-1 is out of range"),
    ("model.kl_weight", -1.0, "model.kl_weight=-1.0 is out of range"),
    ("optimizer", "sgd", "unknown optimizer 'sgd'"),
    ("weight_decay", -1e-5, "weight_decay=-1e-05 is out of range"),
])
def test_out_of_range_values_are_named(key, value, message):
  config = vae.get_config("smoke")
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value
  with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config_checks.check(config, 4)


def test_family_keys_are_checked():
  config = dae.get_config("smoke")
  config.model.noise_resolution = 128
  with pytest.raises(UserError, match="noise_resolution=128 is out of range"):
    config_checks.check(config, 4)
  config = fanogan.get_config("smoke")
  config.model.gan_steps = config.num_train_steps
  with pytest.raises(UserError, match="gan_steps=60 is out of range"):
    config_checks.check(config, 4)
  config = vae.get_config("smoke")
  config.model.norm = "group"
  config.model.channels = (4, 8, 16)
  with pytest.raises(UserError, match="multiples of 8"):
    config_checks.check(config, 4)


@pytest.mark.parametrize("key, value, message", [
    ("base_width", 6, "model.base_width=6 is out of range: expected a multiple of "
                      "model.norm_groups (4)"),
    ("norm_groups", 0, "model.norm_groups=0 is out of range"),
    ("levels", 1, "model.levels=1 is out of range"),
    ("levels", 8, "dataset.resolution 64 is not divisible by 2^7 = 128, the U-Net's"),
    ("noise_resolution", 128, "model.noise_resolution=128 is out of range"),
])
def test_unet_keys_are_checked(key, value, message):
  config = unet_dae.get_config("smoke")
  config.model[key] = value
  with pytest.raises(UserError, match=re.escape(message)):
    config_checks.check(config, 4)


def test_unet_family_on_an_autoencoder_config_names_its_missing_keys():
  config = vae.get_config("smoke")
  config.model.name = "unet_dae"
  with pytest.raises(UserError, match="needs model.base_width, model.levels"):
    config_checks.check(config, 4)


@pytest.mark.parametrize("name", ["ae", "vae", "dae", "unet_dae", "fanogan", "threshold"])
@pytest.mark.parametrize("variant", [None, "smoke"])
def test_every_shipped_config_passes(name, variant):
  import importlib
  config_checks.check(importlib.import_module(f"configs.{name}").get_config(variant), 4)


def test_an_eval_key_stops_launch_before_training(tmp_path, data_dir):
  result = run(["launch.py", "--config=configs/vae.py:smoke", f"--workdir={tmp_path}",
                "--config.eval.residual=bogus"], data_dir, check=False)
  assert result.returncode == 1 and "unknown eval.residual 'bogus'" in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_an_unknown_key_is_printed_as_plain_words(tmp_path, data_dir):
  result = run(["launch.py", "--config=configs/vae.py:smoke", f"--workdir={tmp_path}",
                "--config.model.chanels=(8,16)"], data_dir, check=False)
  assert result.returncode == 1
  line = result.stderr.strip()
  assert "chanels" in line and "\\n" not in line and "\\'" not in line, line
  assert len(line.splitlines()) == 1, line
