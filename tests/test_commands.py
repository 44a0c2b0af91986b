"""Every command on a trained workdir of every model family.

launch's train-then-evaluate makes a short `:smoke` run; evaluation runs
again for the denoising U-Net (the same metrics: it is deterministic); calibrate derives a site's
thresholds from a healthy scan; predict maps that scan with the model's own
thresholds and with the calibration's. predict and calibrate get nothing but
the workdir: the config comes from the run. The commands' own functions run in
this process, so that compiled programs and the scan's registration are shared
by all families; test_launch.py, test_predict.py and test_calibrate.py run the
same functions as commands.
"""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from brainseg_jax import calibrate, evaluation, experiment, predict
from brainseg_jax import config as config_lib

FAMILIES = ("ae", "vae", "dae", "unet_dae", "fanogan", "threshold")
# A few steps are enough to make a workdir of each kind; f-AnoGAN needs both of its stages.
# The denoising U-Net, the model that matters most, runs its whole :smoke config and must learn.
SHORT = ("num_train_steps=4", "warmup_steps=1", "checkpoint_every_steps=2", "log_every_steps=2")
QUIET = ("eval.write_nifti=False", "eval.num_figure_volumes=0")
OVERRIDES = {"fanogan": (*SHORT, "model.gan_steps=2"), "unet_dae": ()}
# (family, its overrides): every family as configured, and the 2.5D U-Net (a slice and one
# neighbour each side in, the centre's map out), whose scans predict must stack the same way.
CASES = [*((family, OVERRIDES.get(family, SHORT)) for family in FAMILIES),
         ("unet_dae", ("dataset.context_slices=1", *SHORT))]


@pytest.fixture(scope="module")
def site(sample_data_dir, tmp_path_factory):
  """A folder with one elderly FLAIR scan (skull on, LPS, 2 mm) that passes registration QC."""
  folder = tmp_path_factory.mktemp("site")
  shutil.copy(sample_data_dir / "elderly_flair" / "flair" / "Subj4_FL.nii.gz", folder)
  return folder


def _metrics(workdir):
  metrics = json.loads((workdir / "metrics.json").read_text())
  metrics.pop("seconds")
  return metrics


@pytest.mark.slow
@pytest.mark.parametrize("family, overrides", CASES,
                         ids=[*FAMILIES, "unet_dae_2.5d"])
def test_every_command_on_a_trained_workdir(family, overrides, data_dir, site, tmp_path):
  workdir = tmp_path / "run"
  config = config_lib.load(f"{family}:smoke", (*overrides, *QUIET,
                                               f"dataset.data_dir={data_dir}"))
  experiment.train_then_evaluate(config, str(workdir))
  evaluated = _metrics(workdir)
  assert evaluated["model"] == family

  if family == "unet_dae" and not overrides:
    assert evaluated["checkpoint_step"] == 60
    log = [json.loads(line) for line in (workdir / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"], log
    # Even 60 steps of denoising rank anomalous voxels above healthy ones.
    assert evaluated["pooled"]["all"]["auroc"] > 0.6
    evaluation.evaluate(config, str(workdir))
    assert _metrics(workdir) == evaluated

  calibration = calibrate.calibrate(str(workdir), str(site), "site")
  assert calibration["scans"] == [str(site / "Subj4_FL.nii.gz")]

  scan = site / "Subj4_FL.nii.gz"
  for name, calibration_name, threshold in (
      ("own", None, evaluated["protocol"]["threshold"]),
      ("site", "site", calibration["thresholds"]["fpr_0.01"])):
    out = tmp_path / name
    predict.predict(str(workdir), str(scan), str(out), calibration=calibration_name)
    report = json.loads((out / "Subj4_FL_report.json").read_text())
    assert report["threshold"] == pytest.approx(threshold)
    anomaly = nib.load(out / "Subj4_FL_anomaly_map.nii.gz")
    assert anomaly.shape == nib.load(scan).shape
    assert np.isfinite(anomaly.get_fdata()).all()
  # The site's own healthy scan, at its own 1 % threshold: about 1 % of its brain flagged.
  assert report["brain_fraction_flagged"] <= 0.02

  # The scan's own threshold, from its own map.
  out = tmp_path / "adaptive"
  predict.predict(str(workdir), str(scan), str(out), threshold="adaptive")
  report = json.loads((out / "Subj4_FL_report.json").read_text())
  k = evaluated["protocol"]["adaptive_thresholds"]["adaptive_fpr_0.01"]
  assert f"{k:.3g} x spread" in report["threshold_source"]
  assert report["threshold"] != pytest.approx(evaluated["protocol"]["threshold"])
  assert 0 < report["brain_fraction_flagged"] < 0.2
