"""Anomaly maps for new scans, written onto the scans' own grids.

    python -m brainseg_jax.predict --workdir=runs/vae --input=scan.nii.gz \\
        [--brain_mask=mask.nii.gz] --output_dir=out/
    python -m brainseg_jax.predict --workdir=runs/vae --input=folder_of_scans/ --output_dir=out/

Each scan (any orientation, not skull-stripped) goes through the same
preprocessing as the training data (`data_prep.pipeline`), is scored by the
trained model with the threshold its evaluation chose on healthy data, and
comes back as NIfTI files with the input's affine and shape, which open on top
of the scan in any viewer:
  <name>_anomaly_map.nii.gz     anomaly score per voxel
  <name>_prediction.nii.gz      0/1 at the healthy-calibrated threshold
  <name>_reconstruction.nii.gz  what the model expected to see
  <name>_overlay.png            the scan's most anomalous axial slice with the prediction
  <name>_report.json            threshold and its source, fraction of the brain flagged
                                against the fraction promised (with a warning far above it),
                                registration QC (with a warning when it fails), intensity
                                standardisation, the predicted lesions as 3D components
                                (mL, scanner mm)
The config is the one saved with the checkpoint, so only the workdir is needed.
`--calibration=NAME` takes the thresholds of a calibration on a new site's own
healthy scans (`python -m brainseg_jax.calibrate`) instead of the model's.
"""

import concurrent.futures
import os

import nibabel as nib
import numpy as np
from absl import flags, logging

from brainseg_jax import cli, figures, outputs, postprocess, report, scans
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.errors import UserError
from data_prep import atomic

FLAGS = flags.FLAGS


class Predictor:
  """A trained model with its threshold, ready to score one scan after another."""

  def __init__(self, workdir: str, registration: str = "affine", n4: bool = True,
               calibration: str | None = None):
    # The threshold first: a missing one fails before the model is restored.
    self.threshold = (workdir_lib.calibration_threshold(workdir, calibration) if calibration
                      else workdir_lib.model_threshold(workdir))
    # The checkpoint the threshold was set on, not the latest: a run still training (or
    # trained on after its evaluation) has newer ones that the threshold does not fit.
    self.scan_scorer = scans.ScanScorer(workdir, registration, n4,
                                        step=self.threshold.checkpoint_step)

  def __call__(self, scan_path: str, output_dir: str, brain_mask_path: str | None = None,
               extra_paths=()):
    from data_prep import pipeline, timing

    watch = timing.Stopwatch()
    with watch.stage("preprocess"):
      prepared = self.scan_scorer.preprocess(scan_path, brain_mask_path, extra_paths)
    with watch.stage("score"):
      volume, recon, anomaly = self.scan_scorer.score(prepared)
      post = self.scan_scorer.config.eval.postprocess
      prediction = postprocess.clean_prediction(anomaly > self.threshold.value,
                                                post.min_component_size)
      brain = volume.brain_mask[..., 0]
      if not brain.any():
        raise UserError(f"{scan_path}: the brain mask is empty on the model's grid; check "
                        "--brain_mask or the registration")
      flagged_fraction = float(prediction[brain].mean())

    name = _stem(scan_path)
    maps = {"anomaly_map": (anomaly, 1), "prediction": (prediction.astype(np.float32), 0),
            "reconstruction": (recon, 1)}
    written = {kind: os.path.join(output_dir, f"{name}_{kind}.nii.gz") for kind in maps}
    written["overlay"] = os.path.join(output_dir, f"{name}_overlay.png")
    written["report"] = os.path.join(output_dir, f"{name}_report.json")

    # A scan's outputs are a set: all under their final names, or none (an error, Ctrl-C,
    # SIGTERM or a full disk on the way leaves nothing half-done behind).
    with atomic.file_set() as files:

      def on_scan_grid(kind):
        array, order = maps[kind]
        image = pipeline.to_original_grid(array, prepared.record, order=order)
        if kind == "prediction":
          image = nib.Nifti1Image(np.asarray(image.dataobj).round().astype(np.uint8),
                                  image.affine)
        image = outputs.with_input_orientation(image, prepared.scan)
        outputs.save_nifti(image, files.path(written[kind]))
        return image

      with watch.stage("write NIfTI"):
        # The three maps in parallel: interpolation and gzip release the GIL (2.3 s -> 1.3 s
        # for a 240x240x155 scan on 2 cores).
        with concurrent.futures.ThreadPoolExecutor(len(maps)) as pool:
          images = dict(zip(maps, pool.map(on_scan_grid, maps), strict=True))
      with watch.stage("report, overlay PNG"):
        scan_report = report.scan_report(os.path.abspath(scan_path), self.threshold,
                                         flagged_fraction, images["prediction"], prepared.qc,
                                         self.scan_scorer.config.dataset.standardize,
                                         modality=self.scan_scorer.channels[0],
                                         notes=prepared.notes)
        figures.save_overlay(files.path(written["overlay"]), prepared.scan,
                             images["anomaly_map"], images["prediction"], self.threshold.value,
                             report.caption(scan_report))
      # Where this scan's seconds went: preprocessing by stage, then predict's own stages.
      scan_report["seconds"] = {
          "preprocess_stages": {k: round(v, 3) for k, v in prepared.timings.items()},
          **{k: round(v, 3) for k, v in watch.seconds.items()}}
      atomic.write_json(files.path(written["report"]), scan_report)
    logging.info("%s: %.2f%% of the brain flagged (threshold %.4f, %s) -> %s in %.1f s",
                 scan_path, 100 * flagged_fraction, self.threshold.value, self.threshold.source,
                 output_dir, watch.total())
    if scan_report["warning"]:
      logging.warning("%s: %s", scan_path, scan_report["warning"])
    return written


def _stem(path: str) -> str:
  name = os.path.basename(path)
  for suffix in (".nii.gz", ".nii"):
    if name.endswith(suffix):
      return name[: -len(suffix)]
  return name


def predict(workdir: str, input_path: str, output_dir: str, brain_mask: str | None = None,
            registration: str = "affine", n4: bool = True,
            calibration: str | None = None, extra_inputs=()) -> dict[str, dict]:
  """Maps for a scan, or for every scan of a folder: one that fails is logged and skipped.

  `extra_inputs`: the session's further modalities, for a model of several
  channels (a single --input scan only).
  """
  paths = scans.scan_paths(input_path)
  if brain_mask and len(paths) > 1:
    raise UserError("--brain_mask goes with a single --input scan, not a folder")
  if extra_inputs and len(paths) > 1:
    raise UserError("--extra_inputs go with a single --input scan, not a folder")
  for path in extra_inputs:
    if not os.path.isfile(path):
      raise UserError(f"extra input {path} does not exist")
  output_dir = workdir_lib.ensure_writable(output_dir, "--output_dir")
  for path in atomic.remove_stale(output_dir):
    logging.info("removed %s, left by an interrupted run", path)
  predictor = Predictor(workdir, registration, n4, calibration)
  if os.path.isfile(input_path):  # one scan: its error is the command's one line
    return {input_path: predictor(input_path, output_dir, brain_mask, extra_inputs)}
  results, _ = scans.for_each_scan(paths, lambda path: predictor(path, output_dir, brain_mask))
  return results


def main():
  flags.DEFINE_string("workdir", None, "A trained run's workdir (its checkpoint holds the config).")
  flags.DEFINE_string("input", None, "A NIfTI scan, or a folder of them (*.nii, *.nii.gz).")
  flags.DEFINE_string("brain_mask", None, "Brain mask of a single --input scan; by default the "
                      "template's, carried through the registration.")
  flags.DEFINE_list("extra_inputs", [], "For a model of several modalities: the session's "
                    "further scans of a single --input, in the order of the model's channels "
                    "after the first (e.g. T1,T1c for a FLAIR+T1+T1c model).")
  flags.DEFINE_string("output_dir", None, "Where the maps go (created).")
  flags.DEFINE_enum("registration", "affine", ["affine", "none"], "'none' for scans already "
                    "in MNI152 space at the training grid.")
  flags.DEFINE_bool("n4", True, "N4 bias-field correction (off for already corrected scans).")
  flags.DEFINE_string("calibration", None, "Use the thresholds of this site's calibration "
                      "(python -m brainseg_jax.calibrate) instead of the model's own.")
  cli.define_device_flags()

  def command():
    cli.require_flags("workdir", "input", "output_dir")
    predict(FLAGS.workdir, FLAGS.input, FLAGS.output_dir, FLAGS.brain_mask, FLAGS.registration,
            FLAGS.n4, FLAGS.calibration, tuple(FLAGS.extra_inputs))

  cli.run(command)


if __name__ == "__main__":
  main()
