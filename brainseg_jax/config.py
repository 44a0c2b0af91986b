"""The experiment config: its defaults, variants, loading, checks and derived views.

Every key of an experiment has one home: the keys shared by every run below
(`defaults`), each model family's keys in its own module (`model_config()`,
`smoke()` and `check()` beside its code, brainseg_jax/models/), and the
experiment files in configs/ that pick a family and change a few values. Code
that needs something the keys imply (the image channels, the scored channels,
the residual) asks this module, never re-derives it.

A run's config is saved with its checkpoints; `from_saved` restores it as it
was saved, so a trained workdir is all predict and calibrate need.

This module sits below everything that reads a config: what its checks test
values against (the dataset and model registries) is imported when checking.
"""

import os

import ml_collections
from absl import flags
from ml_collections import config_flags

from brainseg_jax import augment
from brainseg_jax.errors import UserError, one_of, plain, positive_int, require

# The residual the anomaly map is made of ("auto": by modality, see `residual`).
RESIDUALS = ("abs", "positive")
RESIDUAL_SETTINGS = (*RESIDUALS, "auto")
# Modalities whose lesions of interest are hyperintense: "auto" takes the positive residual.
_HYPERINTENSE_LESIONS = ("flair", "t2")
STANDARDIZE_METHODS = ("none", "nyul")
VARIANTS = ("smoke", "lgg")


def defaults(family: str = "ae") -> ml_collections.ConfigDict:
  """Every key of an experiment, with the model block of `family` (a models.FAMILIES name)."""
  config = ml_collections.ConfigDict()
  # Names the default workdir, runs/<experiment>.
  config.experiment = family
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "synthetic_brain"
  config.dataset.modality = "flair"
  # Several modalities as input channels, e.g. ("flair", "t1", "t1c") (datasets with such a
  # variant: lgg); empty: `modality` alone. One anomaly map: the mean residual over channels.
  config.dataset.modalities = ()
  config.dataset.resolution = 128
  # Empty: $BRAINSEG_DATA_DIR, else TFDS's default (~/tensorflow_datasets).
  config.dataset.data_dir = ""
  # Folder of raw scans for datasets you download yourself (ixi, brats, mslub, ...).
  config.dataset.manual_dir = ""
  # Slices to train on (and to take the healthy threshold from, on validation): "all", or
  # "lesion_free" for datasets of patient scans with lesion masks (lgg, brats_glioma, ...):
  # only slices at least `lesion_margin_slices` away from any annotated lesion.
  config.dataset.train_slices = "all"
  config.dataset.lesion_margin_slices = 2
  # Intensity standardisation on top of the percentile normalisation: "none", or "nyul"
  # (piecewise-linear histogram standardisation learned on the training brains).
  config.dataset.standardize = "none"
  # 2.5D: this many neighbouring slices on each side of a slice go in as extra channels
  # (edge slices repeat the volume's end slice); the anomaly map is the centre slice's.
  config.dataset.context_slices = 0
  # Datasets of the same modality and resolution whose slices (every split, by the
  # `train_slices` protocol) join the training split, as "name=manual_dir" entries,
  # e.g. ("brats_glioma=DATA/tcga_glioma",): training pooled over sources. Thresholds
  # still come from this dataset's validation split.
  config.dataset.pool = ()

  config.model = _family(family).model_config()

  config.batch_size = 32  # global, split over all devices
  config.num_train_steps = 1200
  # Optimiser of the reconstruction models (f-AnoGAN sets its own under model).
  config.optimizer = "adam"  # or "amsgrad"
  config.learning_rate = 1e-3
  config.weight_decay = 0.0  # L2 added to the gradient, as torch.optim.Adam's weight_decay
  config.warmup_steps = 100
  config.grad_clip_norm = 1.0
  config.log_every_steps = 50
  config.checkpoint_every_steps = 250
  config.keep_checkpoints = 3
  # Random intensity transforms of the training slices (reconstruction models; off by default).
  config.augment = augment.config()

  config.eval = ml_collections.ConfigDict()
  # Thresholds: each flags this fraction of the voxels of the healthy validation
  # brains (the (1 - fpr) quantile of their scores). The first is the headline.
  config.eval.healthy_fprs = (0.01, 0.05, 0.1)
  # |x - x_hat| ("abs"), max(x - x_hat, 0) ("positive"), or "auto": positive for FLAIR and T2,
  # whose lesions are hyperintense (better on the LGG validation patients), abs otherwise.
  config.eval.residual = "auto"
  # Modalities the anomaly map averages over (e.g. ("flair",) for a FLAIR+T1+T1c
  # model); empty: every channel of dataset.modalities.
  config.eval.score_channels = ()
  # Post-processing, each step off by default (see brainseg_jax/postprocess.py).
  config.eval.postprocess = ml_collections.ConfigDict()
  config.eval.postprocess.median_filter_size = 0  # > 1: median filter of this size
  config.eval.postprocess.median_filter_dims = 2  # 2: in-slice, 3: across slices too
  config.eval.postprocess.brain_erosion = 0  # erode the brain mask this many voxels
  config.eval.postprocess.low_intensity_percentile = 0.0  # zero the map where the image is darker
  config.eval.postprocess.min_component_size = 0  # drop predicted 3D components smaller than this
  # Anomaly map, prediction and reconstruction of each test volume as NIfTI.
  config.eval.write_nifti = True
  # Take the test volumes from another dataset (same modality and resolution),
  # e.g. train on healthy IXI, test on BraTS; empty: the training dataset's test split.
  config.eval.test_dataset = ""
  config.eval.test_manual_dir = ""
  # Splits of the test dataset scored as test volumes: ("train", "validation", "test") scores
  # every subject of a dataset the model never trained on (only with eval.test_dataset).
  config.eval.test_splits = ("test",)
  config.eval.num_figure_volumes = 4
  return config


def _family(name: str):
  from brainseg_jax import models

  if name not in models.FAMILIES:
    raise UserError(f"unknown model.name {name!r}: expected one of {', '.join(models.NAMES)}")
  return models.FAMILIES[name]


# --------------------------------------------------------------------------- variants


def with_variant(config: ml_collections.ConfigDict, variant: str | None):
  """Applies the variant named after the config file's colon (`vae.py:smoke`)."""
  if variant in (None, ""):
    return config
  if variant == "smoke":
    return smoke(config)
  if variant == "lgg":
    return lgg(config)
  raise UserError(f"unknown config variant {variant!r}: expected one of {', '.join(VARIANTS)} "
                  "or none")


def lgg(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The glioma benchmark: the Kaggle LGG FLAIR scans (110 TCGA patients, split by patient).

  Models learn from the lesion-free slices of the 58 training patients (2 slices of margin
  around every tumour), the healthy threshold comes from the same slices of the 11 validation
  patients, and every slice of the 41 test patients is scored. 64 x 64 slices: the scans are
  256 x 256 with 3-7 mm slices, and this is the size that trains on 2 CPU cores in the budget.
  Set `dataset.manual_dir` to the download's kaggle_3m folder (docs/data.md).
  """
  config.experiment += "_lgg"
  config.dataset.name = "lgg"
  config.dataset.modality = "flair"
  config.dataset.resolution = 64
  config.dataset.train_slices = "lesion_free"
  config.dataset.lesion_margin_slices = 2
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config to train and evaluate in well under 2 minutes on a CPU."""
  config.experiment += "_smoke"
  config.dataset.resolution = 64
  _family(config.model.name).smoke(config.model)
  config.batch_size = 8
  config.num_train_steps = 60
  config.warmup_steps = 10
  config.log_every_steps = 10
  config.checkpoint_every_steps = 30
  config.eval.num_figure_volumes = 2
  return config


# --------------------------------------------------------------------------- loading


def config_file(spec: str) -> str:
  """The experiment file of a spec: a path ("configs/vae.py:smoke") or a name ("vae:smoke").

  A name is a file of the `configs/` folder of the current directory, else of
  the installed `configs` package (found, not imported).
  """
  name, sep, variant = spec.partition(":")
  if name.endswith(".py"):
    path = name
  else:
    path = os.path.join("configs", f"{name}.py")
    if not os.path.isfile(path):
      import importlib.util
      found = importlib.util.find_spec("configs")
      if found is not None and found.submodule_search_locations:
        path = os.path.join(list(found.submodule_search_locations)[0], f"{name}.py")
  if not os.path.isfile(path):
    raise UserError(f"no config file {path}")
  return path + sep + variant


def load(spec: str, overrides=()) -> ml_collections.ConfigDict:
  """A config as `--config=spec --config.key=value ...` would give it (compare's runs).

  Goes through config_flags itself, so the file, its variants and value
  parsing are exactly those of the command line.
  """
  spec = config_file(spec)
  _check_keys_exist(spec, _parse(spec, ()), overrides)
  return _parse(spec, overrides)


def _parse(spec: str, overrides) -> ml_collections.ConfigDict:
  argv = ["load", f"--config={spec}", *(f"--config.{o}" for o in overrides)]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  try:
    flag_values(argv)
    config = flag_values.config
    config.keys()
  except (flags.Error, OSError, AttributeError, KeyError, TypeError, ValueError) as e:
    raise UserError(f"config {spec} with overrides {list(overrides)}: {plain(e)}") from e
  return config


def _check_keys_exist(spec: str, config: ml_collections.ConfigDict, overrides):
  for override in overrides:
    key = override.partition("=")[0]
    node = config
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise UserError(f"--override {override!r}: config {spec} has no key {key!r}")
      node = node[part]


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """A config saved with a run (its JSON form), restored as it was saved.

  Keys added since the run was made are filled from today's defaults: the
  shared keys from `defaults`, the model block's from its own family only,
  never with another family's keys.
  """
  model = saved.get("model")
  if not isinstance(model, dict) or not isinstance(model.get("name"), str):
    raise UserError(f"saved config has no model.name: {str(saved)[:200]}")
  config = defaults(model["name"])
  with config.unlocked():
    _merge(config, saved)
  return config


def _merge(config: ml_collections.ConfigDict, saved: dict, prefix: str = ""):
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(config.get(key), ml_collections.ConfigDict):
      _merge(config[key], value, f"{prefix}{key}.")
      continue
    try:
      config[key] = _from_json(value)
    except (TypeError, ValueError) as e:  # a hand-edited value of the wrong type
      raise UserError(f"saved config key {prefix}{key}={value!r} is not a "
                      f"{type(config[key]).__name__}: the run's saved config was edited "
                      f"({plain(e)[:120]})") from None


def _from_json(value):
  if isinstance(value, list):
    return tuple(_from_json(v) for v in value)
  if isinstance(value, dict):
    return ml_collections.ConfigDict({k: _from_json(v) for k, v in value.items()})
  return value


def model_differences(config: ml_collections.ConfigDict, saved: dict) -> dict:
  """{key: (saved value, config value)} of the family's model keys that differ from `saved`.

  Only keys that change what a trained model computes are compared: a family's
  TRAINING_ONLY_KEYS (the noise a denoiser was trained with, a loss weight, a
  schedule) do not, and a run trained under another value of one is scored the
  same. Keys of the family the saved block lacks count as their defaults (a run
  made before the key existed); keys the family does not declare are not compared.
  """
  family = _family(config.model.name)
  restored = from_saved(saved).model
  return {key: (restored.get(key), config.model.get(key))
          for key in family.model_config() if key not in family.TRAINING_ONLY_KEYS
          if _from_json(restored.get(key)) != _from_json(config.model.get(key))}


# --------------------------------------------------------------------------- derived views


def modalities(dataset: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The image channels of a dataset block: `modalities`, else (`modality`,)."""
  return tuple(dataset.modalities) or (dataset.modality,)


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(height, width, channels) of the slices a model of this config sees.

  Channels: the modalities, once per slice of the 2.5D context (slice-major:
  the centre slice's modalities are block `context_slices`).
  """
  size = config.dataset.resolution
  return (size, size, len(modalities(config.dataset)) * (2 * context_slices(config) + 1))


def context_slices(config: ml_collections.ConfigDict) -> int:
  """Neighbouring slices on each side of a slice that a model sees with it (0: 2D)."""
  return config.dataset.context_slices


def pooled_datasets(dataset: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The dataset block of each `dataset.pool` entry: this block with its name and folder."""
  blocks = []
  for entry in dataset.pool:
    name, separator, folder = str(entry).partition("=")
    if not separator or not name or not folder:
      raise UserError(f"dataset.pool entry {entry!r} is not name=manual_dir "
                      "(e.g. brats_glioma=DATA/tcga_glioma)")
    block = ml_collections.ConfigDict(dataset.to_dict())
    block.name, block.manual_dir, block.pool = name, folder, ()
    blocks.append(block)
  return blocks


def scored_channels(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The modalities the anomaly map averages over: `eval.score_channels`, all if empty.

  A model that reconstructs FLAIR, T1 and T1c can still be scored on its FLAIR
  residual alone; the intensity baseline on a several-channel dataset is then
  plain FLAIR thresholding of the same patients.
  """
  return tuple(config.eval.score_channels) or modalities(config.dataset)


def scored_channel_indices(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Positions of `scored_channels` in the images' channel axis."""
  channels = modalities(config.dataset)
  return tuple(channels.index(name) for name in scored_channels(config))


def residual(config: ml_collections.ConfigDict) -> str:
  """The config's residual, "auto" resolved by modality: "positive" for FLAIR and T2 (all
  scored channels; a T1 channel, where gliomas are dark, makes it "abs").

  On the LGG validation patients (FLAIR, denoising U-Net) the positive residual
  raised the best validation Dice from 0.465 to 0.601: a reconstruction brighter
  than the input (dark necrosis, CSF edges) is not a finding there.
  """
  if config.eval.residual != "auto":
    return config.eval.residual
  hyperintense = all(m in _HYPERINTENSE_LESIONS for m in scored_channels(config))
  return "positive" if hyperintense else "abs"


def dataset_config(**values) -> ml_collections.ConfigDict:
  """The dataset block of the defaults with `values` set (a build's dataset, no experiment)."""
  dataset = defaults().dataset
  for key, value in values.items():
    if key not in dataset:
      raise UserError(f"unknown dataset key {key!r}")
    dataset[key] = value
  return dataset


# --------------------------------------------------------------------------- checks


def check(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises UserError naming the first key whose value cannot work.

  A value out of range should stop the run at once with a line naming the key,
  not end in a ZeroDivisionError mid-training, or fail only after an hour of
  training when evaluation first reads it. Training and evaluation both call
  this; launch therefore checks the evaluation keys before it trains, and
  predict checks the config saved with the model it restores.
  `num_devices`: the devices a training batch is split over (None: not training).
  """
  _check_dataset(config)
  family = _family(config.model.name)
  missing = [key for key in family.model_config() if key not in config.model]
  if missing:
    raise UserError(f"model.name {config.model.name!r} needs model.{', model.'.join(missing)}: "
                    f"start from its defaults (config.defaults({config.model.name!r}))")
  family.check(config)
  _check_training(config, num_devices)
  _check_eval(config)


def _check_dataset(config):
  from brainseg_jax.datasets import input_pipeline

  dataset, eval_config = config.dataset, config.eval
  names = sorted(input_pipeline.BUILDERS)
  one_of(dataset.name, names, "dataset.name")
  if eval_config.test_dataset:
    one_of(eval_config.test_dataset, names, "eval.test_dataset")
  positive_int(dataset, "resolution", "dataset.")
  one_of(dataset.train_slices, sorted(input_pipeline.TRAIN_SLICES), "dataset.train_slices")
  positive_int(dataset, "lesion_margin_slices", "dataset.", minimum=0)
  one_of(dataset.standardize, STANDARDIZE_METHODS, "dataset.standardize")
  channels = modalities(dataset)
  if len(channels) > 1 and channels[0] != dataset.modality:
    raise UserError(f"dataset.modalities {channels} must start with dataset.modality "
                    f"{dataset.modality!r} (the first channel names the variant)")
  scored = tuple(eval_config.score_channels)
  for name in scored:
    one_of(name, channels, "eval.score_channels entry")
  if len(set(scored)) != len(scored):
    raise UserError(f"eval.score_channels {scored} names a modality twice")
  positive_int(dataset, "context_slices", "dataset.", minimum=0)
  lesion_free = dataset.train_slices == "lesion_free"
  if lesion_free and dataset.context_slices > dataset.lesion_margin_slices:
    raise UserError(f"dataset.context_slices {dataset.context_slices} exceeds "
                    f"dataset.lesion_margin_slices {dataset.lesion_margin_slices}: the context "
                    "of a lesion-free training slice would reach a lesion")
  for block in pooled_datasets(dataset):
    one_of(block.name, names, "dataset.pool entry")
  if dataset.pool and dataset.standardize != "none":
    raise UserError("dataset.pool with dataset.standardize=nyul is not supported: one standard "
                    "scale for several sources is not defined; set dataset.standardize=none")
  if len(channels) > 1 and dataset.standardize != "none":
    raise UserError("dataset.standardize=nyul with several modalities is not supported yet: "
                    "set dataset.standardize=none or use one modality")


def _check_training(config, num_devices: int | None):
  from brainseg_jax.models.reconstruction import OPTIMIZERS

  for key in ("batch_size", "num_train_steps", "log_every_steps", "checkpoint_every_steps",
              "keep_checkpoints"):
    positive_int(config, key)
  positive_int(config, "seed", minimum=0)
  if num_devices and config.batch_size % num_devices:
    raise UserError(f"batch_size {config.batch_size} is not divisible by the "
                    f"{num_devices} devices it is split over")
  if not 0 <= config.warmup_steps < config.num_train_steps:
    raise UserError(f"warmup_steps {config.warmup_steps} must be in [0, num_train_steps = "
                    f"{config.num_train_steps})")
  require(config.learning_rate > 0, "learning_rate", config.learning_rate, "a number > 0")
  one_of(config.optimizer, tuple(OPTIMIZERS), "optimizer")
  require(config.weight_decay >= 0, "weight_decay", config.weight_decay, "a number >= 0")
  require(config.grad_clip_norm > 0, "grad_clip_norm", config.grad_clip_norm, "a number > 0")
  augment.check(config.augment)
  if config.augment.intensity and config.model.name in ("fanogan", "threshold"):
    raise UserError(f"augment.intensity: model {config.model.name!r} has no reconstruction "
                    "training step to augment (ae, vae, dae and unet_dae have)")


MAX_MEDIAN_FILTER_SIZE = 15


def _check_eval(config):
  eval_config = config.eval
  fprs = tuple(eval_config.healthy_fprs)
  require(len(fprs) > 0 and all(0 < f < 1 for f in fprs), "eval.healthy_fprs", fprs,
          "a non-empty tuple of fractions in (0, 1)")
  one_of(eval_config.residual, RESIDUAL_SETTINGS, "eval.residual")
  post = eval_config.postprocess
  for key in ("median_filter_size", "brain_erosion", "min_component_size"):
    positive_int(post, key, "eval.postprocess.", minimum=0)
  # Wider filters erase the lesions they are meant to clean (and take minutes per volume).
  require(post.median_filter_size <= MAX_MEDIAN_FILTER_SIZE,
          "eval.postprocess.median_filter_size", post.median_filter_size,
          f"an integer in [0, {MAX_MEDIAN_FILTER_SIZE}]")
  require(post.median_filter_dims in (2, 3), "eval.postprocess.median_filter_dims",
          post.median_filter_dims, "2 or 3")
  require(0 <= post.low_intensity_percentile < 100, "eval.postprocess.low_intensity_percentile",
          post.low_intensity_percentile, "a percentile in [0, 100)")
  positive_int(eval_config, "num_figure_volumes", "eval.", minimum=0)
  splits = tuple(eval_config.test_splits)
  require(splits and len(set(splits)) == len(splits)
          and all(s in ("train", "validation", "test") for s in splits), "eval.test_splits",
          splits, "distinct names of train, validation and test")
  if splits != ("test",) and not eval_config.test_dataset:
    raise UserError(f"eval.test_splits {splits} scores splits the model trained or set its "
                    "thresholds on: only with eval.test_dataset (another dataset)")
