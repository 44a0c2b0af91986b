"""Calibrate a trained model's thresholds on a new site's own healthy scans.

    python -m brainseg_jax.calibrate --workdir=runs/vae --healthy=site_scans/ --name=site_a
    python -m brainseg_jax.predict --workdir=runs/vae --input=scan.nii.gz --output_dir=out/ \\
        --calibration=site_a

A threshold set on the model's healthy validation split promises to flag a
fraction `eval.healthy_fprs` of a healthy brain, but only on scans like that
split. Scans from another scanner or protocol can flag far more. This command
puts a handful of the site's healthy scans through the same preprocessing and
scoring as predict (brainseg_jax/scans.py) and re-derives each threshold from
their brain voxels: the score above which that fraction of them lies. No lesion mask is read: the
scans are taken to be healthy. A scan that fails registration QC
(data_prep/qc.py) is left out and named with its reason, like an unreadable
one. The result is stored by name beside the model's own thresholds, never over
them (workdir.py).
"""

import datetime
import os

import numpy as np
from absl import flags, logging

from brainseg_jax import cli, metrics, pretrained, scans
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.errors import UserError
from data_prep import qc, sources

FLAGS = flags.FLAGS


def calibrate(workdir: str, healthy: str, name: str, registration: str = "affine",
              n4: bool = True, threads: int | None = None) -> dict:
  """Thresholds from the brain voxels of every readable scan in `healthy`; returns the record.

  `threads`: registration threads per scan (`scans.ScanScorer`; default every core).
  """
  if not os.path.isdir(healthy):
    raise UserError(f"--healthy {healthy} is not a folder of scans")
  workdir_lib.calibration_path(workdir, name)  # a bad name fails before any scan is read
  # The checkpoint the model's own threshold was set on, so that both fit one model.
  model = workdir_lib.model_threshold(workdir) if workdir_lib.has_metrics(workdir) else None
  scan_scorer = scans.ScanScorer(workdir, registration, n4, threads,
                                 step=model.checkpoint_step if model else None)
  if len(scan_scorer.channels) > 1:
    raise UserError(f"the model in {workdir} takes {len(scan_scorer.channels)} modalities as "
                    "channels; calibrate reads one scan per subject and supports "
                    "single-modality models only so far")

  found = scans.find_scans(healthy, scan_scorer.channels[0])

  def brain_scores(source):
    with sources.as_nifti(source) as path:
      prepared = scan_scorer.preprocess(path)
    # A scan registered wrongly would set the site's threshold on scalp and skull.
    modality = scan_scorer.channels[0]
    problems = qc.problems(prepared.qc, modality)
    if problems:
      raise UserError(f"{source}: registration QC failed ({'; '.join(problems)}); not used")
    volume, _, anomaly = scan_scorer.score(prepared)
    return anomaly[volume.brain_mask[..., 0]]

  scores, failures = scans.for_each_scan(found, brain_scores)
  used = [os.path.abspath(str(source)) for source in scores]
  failures = {str(source): error for source, error in failures.items()}
  voxels = np.concatenate(list(scores.values()))
  fprs = tuple(scan_scorer.config.eval.healthy_fprs)
  record = workdir_lib.calibration_record(
      name, os.path.abspath(healthy), used, failures,
      {fpr: metrics.threshold_at_fpr(voxels, fpr) for fpr in fprs}, int(voxels.size),
      datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), scan_scorer.step)
  path = workdir_lib.save_calibration(workdir, record)
  headline = workdir_lib.calibration_threshold(workdir, name)
  logging.info("calibration %r from %d scans (%d skipped): threshold %.4f at healthy FPR %g%s "
               "-> %s", name, len(used), len(failures), headline.value, headline.healthy_fpr,
               f" (model's own: {model.value:.4f})" if model else "", path)
  return record


def main():
  flags.DEFINE_string("workdir", None, "A trained run's workdir; or --model.")
  flags.DEFINE_string("model", None, "A model shipped with the package (predict --list_models); "
                      "its calibration is stored in the user's data folder.")
  flags.DEFINE_string("healthy", None, "A folder of healthy scans of the site (*.nii, *.nii.gz).")
  flags.DEFINE_string("name", "site", "Name of this calibration (predict --calibration=NAME).")
  flags.DEFINE_enum("registration", "affine", ["affine", "none"], "As for predict.")
  flags.DEFINE_bool("n4", True, "As for predict.")
  cli.define_device_flags()

  def command():
    cli.require_flags("healthy")
    if bool(FLAGS.workdir) == bool(FLAGS.model):
      raise UserError("pass --workdir (a run of your own) or --model (a shipped one), not both "
                      "or neither")
    workdir = FLAGS.workdir or pretrained.workdir(FLAGS.model)
    calibrate(workdir, FLAGS.healthy, FLAGS.name, FLAGS.registration, FLAGS.n4)

  cli.run(command)


if __name__ == "__main__":
  main()
