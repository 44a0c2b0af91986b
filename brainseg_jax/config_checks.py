"""Every config key checked before anything expensive runs.

A value out of range should stop the run at once with a line naming the key,
not end in a ZeroDivisionError mid-training, or fail only after an hour of
training when evaluation first reads it. Training and evaluation both call
`check`; launch therefore checks the evaluation keys before it trains.
"""

import ml_collections

from brainseg_jax import scoring, standardization
from brainseg_jax.datasets import input_pipeline, schema
from brainseg_jax.errors import UserError
from brainseg_jax.models import NAMES as MODEL_NAMES
from brainseg_jax.models.reconstruction import OPTIMIZERS

_BOTTLENECKS = ("dense", "spatial")
_NORMS = ("none", "group", "layer")
_GROUPS = 8  # layers.GroupNorm's group count: group norm needs channels divisible by it


def check(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises UserError naming the first key whose value cannot work.

  `num_devices`: the devices a training batch is split over (None: not training).
  """
  _check_dataset(config.dataset, config.eval)
  _check_model(config)
  _check_training(config, num_devices)
  _check_eval(config.eval)


def _require(condition: bool, key: str, value, expected: str):
  if not condition:
    raise UserError(f"config key {key}={value!r} is out of range: expected {expected}")


def _one_of(value, choices, key: str):
  if value not in choices:
    raise UserError(f"unknown {key} {value!r}: expected one of {', '.join(map(str, choices))}")


def _positive_int(config, key: str, prefix: str = "", minimum: int = 1):
  value = config[key]
  _require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
           prefix + key, value, f"an integer >= {minimum}")


def _check_dataset(dataset, eval_config):
  names = sorted(input_pipeline.BUILDERS)
  _one_of(dataset.name, names, "dataset.name")
  if eval_config.test_dataset:
    _one_of(eval_config.test_dataset, names, "eval.test_dataset")
  _positive_int(dataset, "resolution", "dataset.")
  _one_of(dataset.train_slices, sorted(input_pipeline.TRAIN_SLICES), "dataset.train_slices")
  _positive_int(dataset, "lesion_margin_slices", "dataset.", minimum=0)
  _one_of(dataset.standardize, standardization.METHODS, "dataset.standardize")
  channels = schema.modalities(dataset)
  if len(channels) > 1 and channels[0] != dataset.modality:
    raise UserError(f"dataset.modalities {channels} must start with dataset.modality "
                    f"{dataset.modality!r} (the first channel names the variant)")
  scored = tuple(eval_config.get("score_channels", ()) or ())
  for name in scored:
    _one_of(name, channels, "eval.score_channels entry")
  if len(set(scored)) != len(scored):
    raise UserError(f"eval.score_channels {scored} names a modality twice")
  if len(channels) > 1 and dataset.standardize != "none":
    raise UserError("dataset.standardize=nyul with several modalities is not supported yet: "
                    "set dataset.standardize=none or use one modality")


def _check_model(config):
  model = config.model
  _one_of(model.name, MODEL_NAMES, "model.name")
  if "channels" in model:  # the encoder/decoder families' settings (not the U-Net's)
    _check_encoder_decoder(config)
  _check_family(config)


def _check_encoder_decoder(config):
  model = config.model
  channels = tuple(model.channels)
  _require(len(channels) > 0 and all(isinstance(c, int) and c > 0 for c in channels),
           "model.channels", channels, "a non-empty tuple of positive integers")
  factor = 2 ** len(channels)
  if config.dataset.resolution % factor:
    raise UserError(f"dataset.resolution {config.dataset.resolution} is not divisible by "
                    f"2^{len(channels)} = {factor}, the encoder's downsampling "
                    f"(one halving per entry of model.channels)")
  _one_of(model.bottleneck, _BOTTLENECKS, "model.bottleneck")
  _one_of(model.norm, _NORMS, "model.norm")
  if model.norm == "group":
    _require(all(c % _GROUPS == 0 for c in channels), "model.channels", channels,
             f"multiples of {_GROUPS} with model.norm='group'")
  for key in ("latent_dim", "latent_channels", "blocks_per_level"):
    _positive_int(model, key, "model.")


def _check_family(config):
  model = config.model
  if "kl_weight" in model:
    _require(model.kl_weight >= 0, "model.kl_weight", model.kl_weight, "a number >= 0")
  if "noise_std" in model:
    _require(model.noise_std > 0, "model.noise_std", model.noise_std, "a number > 0")
    _positive_int(model, "noise_resolution", "model.")
    _require(model.noise_resolution <= config.dataset.resolution, "model.noise_resolution",
             model.noise_resolution, f"at most dataset.resolution ({config.dataset.resolution})")
  if model.name == "unet_dae":
    _check_unet(config)
  if model.name == "fanogan":
    for key in ("critic_steps", "latent_dim"):
      _positive_int(model, key, "model.")
    _require(0 < model.gan_steps < config.num_train_steps, "model.gan_steps", model.gan_steps,
             f"in (0, num_train_steps = {config.num_train_steps}): the encoder stage needs steps")
    for key in ("gan_learning_rate", "encoder_learning_rate"):
      _require(model[key] > 0, f"model.{key}", model[key], "a number > 0")


_UNET_KEYS = ("base_width", "levels", "norm_groups", "noise_std", "noise_resolution")


def _check_unet(config):
  model = config.model
  missing = [key for key in _UNET_KEYS if key not in model]
  if missing:
    raise UserError(f"model.name 'unet_dae' needs model.{', model.'.join(missing)}: "
                    "start from configs/unet_dae.py")
  for key in ("base_width", "norm_groups"):
    _positive_int(model, key, "model.")
  _positive_int(model, "levels", "model.", minimum=2)
  _require(model.base_width % model.norm_groups == 0, "model.base_width", model.base_width,
           f"a multiple of model.norm_groups ({model.norm_groups}): group norm splits every "
           "level's features into that many groups")
  halvings = 2 ** (model.levels - 1)
  if config.dataset.resolution % halvings:
    raise UserError(f"dataset.resolution {config.dataset.resolution} is not divisible by "
                    f"2^{model.levels - 1} = {halvings}, the U-Net's downsampling "
                    f"(model.levels = {model.levels}: one halving per level below the first)")


def _check_training(config, num_devices: int | None):
  for key in ("batch_size", "num_train_steps", "log_every_steps", "checkpoint_every_steps",
              "keep_checkpoints"):
    _positive_int(config, key)
  _positive_int(config, "seed", minimum=0)
  if num_devices and config.batch_size % num_devices:
    raise UserError(f"batch_size {config.batch_size} is not divisible by the "
                    f"{num_devices} devices it is split over")
  if not 0 <= config.warmup_steps < config.num_train_steps:
    raise UserError(f"warmup_steps {config.warmup_steps} must be in [0, num_train_steps = "
                    f"{config.num_train_steps})")
  _require(config.learning_rate > 0, "learning_rate", config.learning_rate, "a number > 0")
  _one_of(config.optimizer, tuple(OPTIMIZERS), "optimizer")
  _require(config.weight_decay >= 0, "weight_decay", config.weight_decay, "a number >= 0")
  _require(config.grad_clip_norm > 0, "grad_clip_norm", config.grad_clip_norm, "a number > 0")


def _check_eval(eval_config):
  fprs = tuple(eval_config.healthy_fprs)
  _require(len(fprs) > 0 and all(0 < f < 1 for f in fprs), "eval.healthy_fprs", fprs,
           "a non-empty tuple of fractions in (0, 1)")
  _one_of(eval_config.residual, scoring.RESIDUAL_SETTINGS, "eval.residual")
  post = eval_config.postprocess
  for key in ("median_filter_size", "brain_erosion", "min_component_size"):
    _positive_int(post, key, "eval.postprocess.", minimum=0)
  _require(post.median_filter_dims in (2, 3), "eval.postprocess.median_filter_dims",
           post.median_filter_dims, "2 or 3")
  _require(0 <= post.low_intensity_percentile < 100, "eval.postprocess.low_intensity_percentile",
           post.low_intensity_percentile, "a percentile in [0, 100)")
  _positive_int(eval_config, "num_figure_volumes", "eval.", minimum=0)
