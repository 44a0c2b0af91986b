"""Every command on a trained workdir of every model family, as a user runs them.

launch trains and evaluates a short `:smoke` run; eval evaluates it again
(the same metrics: evaluation is deterministic); calibrate derives a site's
thresholds from a healthy scan; predict maps that scan with the model's own
thresholds and with the calibration's. predict and calibrate get nothing but
the workdir: the config comes from the run.
"""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import run

FAMILIES = ("ae", "vae", "dae", "unet_dae", "fanogan", "threshold")
# A few steps are enough to make a workdir of each kind; f-AnoGAN needs both of its stages.
SHORT = ("--config.num_train_steps=4", "--config.warmup_steps=1",
         "--config.checkpoint_every_steps=2", "--config.log_every_steps=2")
STAGES = {"fanogan": ("--config.model.gan_steps=2",)}


@pytest.fixture(scope="module")
def site(sample_data_dir, tmp_path_factory):
  """A folder with one elderly FLAIR scan (skull on, LPS, 2 mm) that passes registration QC."""
  folder = tmp_path_factory.mktemp("site")
  shutil.copy(sample_data_dir / "elderly_flair" / "flair" / "Subj2_FL.nii.gz", folder)
  return folder


def _metrics(workdir):
  metrics = json.loads((workdir / "metrics.json").read_text())
  metrics.pop("seconds")
  return metrics


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_command_on_a_trained_workdir(family, data_dir, site, tmp_path):
  workdir = tmp_path / "run"
  config = (f"--config=configs/{family}.py:smoke", *SHORT, *STAGES.get(family, ()))
  run(["launch.py", *config, f"--workdir={workdir}"], data_dir)
  evaluated = _metrics(workdir)
  assert evaluated["model"] == family

  run(["-m", "brainseg_jax.eval", *config, f"--workdir={workdir}"], data_dir)
  assert _metrics(workdir) == evaluated

  run(["-m", "brainseg_jax.calibrate", f"--workdir={workdir}", f"--healthy={site}",
       "--name=site"], None)
  calibration = json.loads((workdir / "calibrations" / "site.json").read_text())
  assert calibration["scans"] == [str(site / "Subj2_FL.nii.gz")]

  scan = site / "Subj2_FL.nii.gz"
  for name, extra, threshold in (
      ("own", (), evaluated["protocol"]["threshold"]),
      ("site", ("--calibration=site",), calibration["thresholds"]["fpr_0.01"])):
    out = tmp_path / name
    run(["-m", "brainseg_jax.predict", f"--workdir={workdir}", f"--input={scan}",
         f"--output_dir={out}", *extra], None)
    report = json.loads((out / "Subj2_FL_report.json").read_text())
    assert report["threshold"] == pytest.approx(threshold)
    anomaly = nib.load(out / "Subj2_FL_anomaly_map.nii.gz")
    assert anomaly.shape == nib.load(scan).shape
    assert np.isfinite(anomaly.get_fdata()).all()
  # The site's own healthy scan, at its own 1 % threshold: about 1 % of its brain flagged.
  assert report["brain_fraction_flagged"] <= 0.02
