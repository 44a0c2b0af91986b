"""Defaults shared by every experiment config; each config file overrides a few.

Select a config with `--config=configs/vae.py`, its smoke variant with
`--config=configs/vae.py:smoke`, and override any key on the command line
(`--config.batch_size=16`, `--config.model.channels="(16,32,64)"`).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Names the default workdir, runs/<experiment>.
  config.experiment = "default"
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

  config.model = ml_collections.ConfigDict()
  config.model.name = "ae"
  config.model.channels = (16, 32, 64, 128)
  config.model.bottleneck = "dense"  # or "spatial"
  config.model.latent_dim = 128  # dense bottleneck
  config.model.latent_channels = 16  # spatial bottleneck
  config.model.blocks_per_level = 1
  config.model.norm = "none"  # "group", "layer"

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
  config.eval.num_figure_volumes = 4
  return config


def with_variant(config: ml_collections.ConfigDict, variant: str | None):
  """Applies the variant named after the config file's colon (`vae.py:smoke`)."""
  if variant in (None, ""):
    return config
  if variant == "smoke":
    return smoke(config)
  if variant == "lgg":
    return lgg(config)
  raise ValueError(f"unknown config variant {variant!r}: expected 'smoke', 'lgg' or none")


def lgg(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The glioma benchmark: the Kaggle LGG FLAIR scans (110 TCGA patients, split by patient).

  Models learn from the lesion-free slices of the 58 training patients (2 slices of margin
  around every tumour), the healthy threshold comes from the same slices of the 11 validation
  patients, and every slice of the 41 test patients is scored. 64 x 64 slices: the scans are
  256 x 256 with 3-7 mm slices, and this is the size that trains on 2 CPU cores in the budget.
  Set `dataset.manual_dir` to the download's kaggle_3m folder (README, "Real scans").
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
  config.model.channels = (8, 16, 32)
  config.model.latent_dim = 32
  config.batch_size = 8
  config.num_train_steps = 60
  config.warmup_steps = 10
  config.log_every_steps = 10
  config.checkpoint_every_steps = 30
  config.eval.num_figure_volumes = 2
  return config
