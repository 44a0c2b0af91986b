"""The config: every key checked before anything expensive runs, views, a saved config."""

import json
import re

import pytest

from brainseg_jax import config as config_lib
from brainseg_jax import models
from brainseg_jax.errors import UserError
from configs import ae, dae, fanogan, threshold, unet_dae, vae
from tests.helpers import run, three_channel_config


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
    ("dataset.context_slices", -1, "dataset.context_slices=-1 is out of range"),
    ("dataset.pool", ("brats_glioma",), "dataset.pool entry 'brats_glioma' is not name=manual_dir"),
    ("dataset.pool", ("brats=DATA/x",), "unknown dataset.pool entry 'brats'"),
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
    config_lib.check(config, 4)


def test_family_keys_are_checked():
  config = dae.get_config("smoke")
  config.model.noise_resolution = 128
  with pytest.raises(UserError, match="noise_resolution=128 is out of range"):
    config_lib.check(config, 4)
  config = fanogan.get_config("smoke")
  config.model.gan_steps = config.num_train_steps
  with pytest.raises(UserError, match="gan_steps=60 is out of range"):
    config_lib.check(config, 4)
  config = vae.get_config("smoke")
  config.model.norm = "group"
  config.model.channels = (4, 8, 16)
  with pytest.raises(UserError, match="multiples of 8"):
    config_lib.check(config, 4)


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
    config_lib.check(config, 4)


def test_unet_family_on_an_autoencoder_config_names_its_missing_keys():
  config = vae.get_config("smoke")
  config.model.name = "unet_dae"
  with pytest.raises(UserError, match="needs model.base_width, .*model.levels"):
    config_lib.check(config, 4)


FAMILY_CONFIGS = {"ae": ae, "vae": vae, "dae": dae, "unet_dae": unet_dae, "fanogan": fanogan,
                  "threshold": threshold}


@pytest.mark.parametrize("name", sorted(FAMILY_CONFIGS))
@pytest.mark.parametrize("variant", [None, "smoke", "lgg"])
def test_a_saved_config_is_restored_as_it_was_saved(name, variant):
  """Through JSON and back, every key comes back, and no other family's key is added."""
  config = FAMILY_CONFIGS[name].get_config(variant)
  config.eval.healthy_fprs = (0.02, 0.2)  # a value no default has
  saved = json.loads(json.dumps(config.to_dict()))
  restored = config_lib.from_saved(saved)
  assert restored.to_dict() == config.to_dict()
  assert not config_lib.model_differences(config, saved)
  config_lib.check(restored)


def test_defaults_fill_only_keys_a_saved_config_lacks():
  saved = json.loads(json.dumps(unet_dae.get_config("smoke").to_dict()))
  del saved["eval"]["score_channels"]  # a key added after the run was made
  del saved["model"]["noise_std"]  # and a key its family added since
  restored = config_lib.from_saved(saved)
  assert restored.eval.score_channels == ()
  assert restored.model.noise_std == unet_dae.get_config().model.noise_std
  assert restored.model.base_width == 8  # the saved smoke value, not the default 16
  assert "channels" not in restored.model and "bottleneck" not in restored.model


def test_a_changed_model_key_is_named_against_the_saved_config():
  saved = json.loads(json.dumps(unet_dae.get_config("smoke").to_dict()))
  config = unet_dae.get_config("smoke")
  config.model.base_width = 16
  assert config_lib.model_differences(config, saved) == {"base_width": (8, 16)}


@pytest.mark.parametrize("name", sorted(FAMILY_CONFIGS))
def test_training_only_keys_are_model_keys_and_are_not_compared(name):
  """A run trained under another noise / loss weight / schedule is scored the same: restorable."""
  training_only = set(models.FAMILIES[name].TRAINING_ONLY_KEYS)
  model_keys = set(FAMILY_CONFIGS[name].get_config().model)
  assert training_only <= model_keys
  saved = json.loads(json.dumps(FAMILY_CONFIGS[name].get_config("smoke").to_dict()))
  for key in training_only:
    value = saved["model"][key]
    saved["model"][key] = ("mixed" if key == "slice_noise" else
                           value + 1 if isinstance(value, (int, float)) else value)
  config = FAMILY_CONFIGS[name].get_config("smoke")
  assert not config_lib.model_differences(config, saved)
  network_keys = model_keys - training_only - {"name"}
  for key in network_keys:  # every other key still tells two models apart
    changed = json.loads(json.dumps(saved))
    value = changed["model"][key]
    changed["model"][key] = (value + 1 if isinstance(value, (int, float)) else
                             [v * 2 for v in value] if isinstance(value, list) else value + "x")
    assert key in config_lib.model_differences(config, changed), key


def test_a_saved_config_without_a_model_name_is_one_line():
  with pytest.raises(UserError, match="no model.name"):
    config_lib.from_saved({"model": {}})


def test_load_by_name_or_path_with_overrides(tmp_path, monkeypatch):
  by_name = config_lib.load("unet_dae:smoke", ["dataset.resolution=32"])
  by_path = config_lib.load("configs/unet_dae.py:smoke", ["dataset.resolution=32"])
  assert by_name.to_dict() == by_path.to_dict()
  assert by_name.dataset.resolution == 32 and by_name.model.base_width == 8
  with pytest.raises(UserError, match="has no key 'model.channels'"):
    config_lib.load("unet_dae", ["model.channels=(8,16)"])
  with pytest.raises(UserError, match="no config file"):
    config_lib.load("nope")
  monkeypatch.chdir(tmp_path)  # a name outside the checkout: the installed configs package
  assert config_lib.load("vae").model.name == "vae"


def test_unknown_variant_is_one_line():
  with pytest.raises(UserError, match="unknown config variant 'tiny'"):
    vae.get_config("tiny")


@pytest.mark.parametrize("name", ["ae", "vae", "dae", "unet_dae", "fanogan", "threshold"])
@pytest.mark.parametrize("variant", [None, "smoke"])
def test_every_shipped_config_passes(name, variant):
  import importlib
  config_lib.check(importlib.import_module(f"configs.{name}").get_config(variant), 4)


@pytest.mark.slow
def test_an_eval_key_stops_launch_before_training(tmp_path, data_dir):
  result = run(["launch.py", "--config=configs/vae.py:smoke", f"--workdir={tmp_path}",
                "--config.eval.residual=bogus"], data_dir, check=False)
  assert result.returncode == 1 and "unknown eval.residual 'bogus'" in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_an_unknown_key_is_printed_as_plain_words(tmp_path, data_dir):
  result = run(["launch.py", "--config=configs/vae.py:smoke", f"--workdir={tmp_path}",
                "--config.model.chanels=(8,16)"], data_dir, check=False)
  assert result.returncode == 1
  line = result.stderr.strip()
  assert "chanels" in line and "\\n" not in line and "\\'" not in line, line
  assert len(line.splitlines()) == 1, line


@pytest.mark.parametrize("modality, residual, expected", [
    ("flair", "auto", "positive"), ("t2", "auto", "positive"), ("t1", "auto", "abs"),
    ("t1c", "auto", "abs"), ("flair", "abs", "abs"), ("t1", "positive", "positive")])
def test_auto_residual_is_positive_for_hyperintense_lesions(modality, residual, expected):
  config = vae.get_config()
  config.dataset.modality, config.eval.residual = modality, residual
  assert config_lib.residual(config) == expected


def test_score_channels_picks_the_named_modalities_and_their_residual():
  everything, flair_only = three_channel_config(), three_channel_config(("flair",))
  assert config_lib.scored_channels(everything) == ("flair", "t1", "t1c")
  assert config_lib.residual(everything) == "abs"  # T1 among the scored channels
  assert config_lib.scored_channel_indices(flair_only) == (0,)
  assert config_lib.residual(flair_only) == "positive"
  assert config_lib.scored_channel_indices(three_channel_config(("t1c", "flair"))) == (2, 0)


@pytest.mark.parametrize("score_channels, message", [
    (("t2",), "unknown eval.score_channels entry 't2'"),
    (("flair", "flair"), "names a modality twice")])
def test_wrong_score_channels_end_with_one_line(score_channels, message):
  with pytest.raises(UserError, match=message):
    config_lib.check(three_channel_config(score_channels))


def test_context_must_stay_inside_the_lesion_margin():
  """A lesion-free slice's neighbours are lesion-free only within the margin."""
  config = unet_dae.get_config("smoke")
  config.dataset.train_slices, config.dataset.lesion_margin_slices = "lesion_free", 1
  config.dataset.context_slices = 2
  with pytest.raises(UserError, match="context_slices 2 exceeds dataset.lesion_margin_slices 1"):
    config_lib.check(config, 4)
  config.dataset.context_slices = 1
  config_lib.check(config, 4)
  assert config_lib.image_shape(config) == (64, 64, 3)


def test_pooling_and_nyul_standardisation_do_not_mix():
  config = unet_dae.get_config("smoke")
  config.dataset.pool, config.dataset.standardize = ("lgg=DATA/kaggle_3m",), "nyul"
  with pytest.raises(UserError, match="dataset.pool with dataset.standardize=nyul"):
    config_lib.check(config, 4)
  (block,) = config_lib.pooled_datasets(config.dataset)
  assert (block.name, block.manual_dir, block.pool) == ("lgg", "DATA/kaggle_3m", ())
  assert block.resolution == config.dataset.resolution

