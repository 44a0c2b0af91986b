"""Anomaly maps for new scans, written onto the scans' own grids.

    python -m brainseg_jax.predict --model=lgg_flair_unet --input=scan.nii.gz --output_dir=out/
    python -m brainseg_jax.predict --workdir=runs/vae --input=folder_of_scans/ --output_dir=out/
    python -m brainseg_jax.predict --list_models

Each scan (any orientation, not skull-stripped) goes through the same
preprocessing as the training data (`data_prep.pipeline`), is scored by the
trained model with the threshold its evaluation chose on healthy data, and
comes back as NIfTI files with the input's affine and shape, which open on top
of the scan in any viewer:
  <name>_anomaly_map.nii.gz     anomaly score per voxel
  <name>_prediction.nii.gz      0/1 at the healthy-calibrated threshold
  <name>_reconstruction.nii.gz  what the model expected to see
  <name>_brain_mask.nii.gz      the brain the scan was scored in
  <name>_overlay.png            the scan's most anomalous axial slice with the prediction
  <name>_report.json            threshold and its source, fraction of the brain flagged
                                against the fraction promised (with a warning far above it),
                                registration QC (with a warning when it fails), intensity
                                standardisation, the predicted lesions as 3D components
                                (mL, scanner mm), the model, the package version, the command
A scan's files appear together or not at all. Over a folder, `summary.csv`
beside them gets a row per scan after each one, and a rerun skips the scans
whose report is already there (`--overwrite` does them again).
The model is a workdir of one's own (`--workdir`; its checkpoint holds the
config) or one shipped with the package (`--model`, `--list_models`).
`--calibration=NAME` takes the thresholds of a calibration on a new site's own
healthy scans (`python -m brainseg_jax.calibrate`) instead of the model's;
`--threshold=adaptive` sets each scan's own from its anomaly map (no healthy
scans of the site needed; brainseg_jax/adaptive.py).
"""

import concurrent.futures
import csv
import io
import json
import os
import shlex
import sys

import nibabel as nib
import numpy as np
from absl import flags, logging

import brainseg_jax
from brainseg_jax import cli, figures, outputs, postprocess, pretrained, report, scans
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.errors import UserError
from data_prep import atomic, sources

FLAGS = flags.FLAGS

SUMMARY_FILE = "summary.csv"
_SUMMARY_COLUMNS = ("scan", "status", "reason", "registration_qc", "threshold",
                    "threshold_source", "brain_fraction_flagged", "healthy_fpr_promised",
                    "lesions", "total_lesion_ml", "largest_lesion_ml", "seconds")


class Predictor:
  """A trained model with its threshold, ready to score one scan after another."""

  def __init__(self, workdir: str, registration: str = "affine", n4: bool = True,
               calibration: str | None = None, model: dict | None = None,
               threshold: str = "healthy"):
    # The threshold first: a missing one fails before the model is restored.
    if calibration and threshold != "healthy":
      raise UserError(f"--calibration and --threshold={threshold}: a calibration is its own "
                      "threshold; give one or the other")
    self.threshold = (workdir_lib.calibration_threshold(workdir, calibration) if calibration
                      else workdir_lib.adaptive_threshold(workdir) if threshold == "adaptive"
                      else workdir_lib.model_threshold(workdir))
    # The checkpoint the threshold was set on, not the latest: a run still training (or
    # trained on after its evaluation) has newer ones that the threshold does not fit.
    self.scan_scorer = scans.ScanScorer(workdir, registration, n4,
                                        step=self.threshold.checkpoint_step)
    self.model = model or {"workdir": os.path.abspath(workdir)}

  def __call__(self, scan_path: str, output_dir: str, brain_mask_path: str | None = None,
               extra_paths=(), name: str | None = None, label: str | None = None,
               written: dict[str, str] | None = None):
    """Writes the scan's files and returns them by kind.

    `name`: their prefix in `output_dir` (or `written`: every path, by kind);
    `label`: the scan in the report and the log.
    """
    from data_prep import pipeline, timing

    label = label or os.path.abspath(scan_path)
    watch = timing.Stopwatch()
    with watch.stage("preprocess"):
      prepared = self.scan_scorer.preprocess(scan_path, brain_mask_path, extra_paths)
    with watch.stage("score"):
      volume, recon, anomaly = self.scan_scorer.score(prepared)
      post = self.scan_scorer.config.eval.postprocess
      brain = volume.brain_mask[..., 0]
      if not brain.any():
        raise UserError(f"{label}: the brain mask is empty on the model's grid; check "
                        "--brain_mask or the registration")
      threshold = self.threshold.for_scan(anomaly[brain])
      prediction = postprocess.clean_prediction(anomaly > threshold.value,
                                                post.min_component_size)
      flagged_fraction = float(prediction[brain].mean())

    written = written or output_paths(output_dir, name or sources.scan_stem(scan_path))
    os.makedirs(os.path.dirname(written["report"]), exist_ok=True)
    maps = {"anomaly_map": (anomaly, 1), "prediction": (prediction.astype(np.float32), 0),
            "reconstruction": (recon, 1), "brain_mask": (brain.astype(np.float32), 0)}

    # A scan's outputs are a set: all under their final names, or none (an error, Ctrl-C,
    # SIGTERM or a full disk on the way leaves nothing half-done behind).
    with atomic.file_set() as files:

      def on_scan_grid(kind):
        array, order = maps[kind]
        image = pipeline.to_original_grid(array, prepared.record, order=order)
        if order == 0:  # labels
          image = nib.Nifti1Image(np.asarray(image.dataobj).round().astype(np.uint8),
                                  image.affine)
        image = outputs.with_input_orientation(image, prepared.scan)
        outputs.save_nifti(image, files.path(written[kind]))
        return image

      with watch.stage("write NIfTI"):
        # The maps in parallel: interpolation and gzip release the GIL (2.3 s -> 1.3 s
        # for three maps of a 240x240x155 scan on 2 cores).
        with concurrent.futures.ThreadPoolExecutor(len(maps)) as pool:
          images = dict(zip(maps, pool.map(on_scan_grid, maps), strict=True))
      with watch.stage("report, overlay PNG"):
        scan_report = report.scan_report(label, threshold,
                                         flagged_fraction, images["prediction"], prepared.qc,
                                         self.scan_scorer.config.dataset.standardize,
                                         modality=self.scan_scorer.channels[0],
                                         notes=prepared.notes)
        scan_report.update(model=self.model, package_version=brainseg_jax.__version__,
                           command=shlex.join(sys.argv))
        figures.save_overlay(files.path(written["overlay"]), prepared.scan,
                             images["anomaly_map"], images["prediction"], threshold.value,
                             report.caption(scan_report))
      # Where this scan's seconds went: preprocessing by stage, then predict's own stages.
      scan_report["seconds"] = {
          "preprocess_stages": {k: round(v, 3) for k, v in prepared.timings.items()},
          **{k: round(v, 3) for k, v in watch.seconds.items()}}
      atomic.write_json(files.path(written["report"]), scan_report)
    logging.info("%s: %.2f%% of the brain flagged (threshold %.4f, %s) -> %s in %.1f s",
                 label, 100 * flagged_fraction, threshold.value, threshold.source,
                 output_dir, watch.total())
    if scan_report["warning"]:
      logging.warning("%s: %s", label, scan_report["warning"])
    return written


def bids_derivative_paths(output_dir: str, source: sources.Source) -> dict[str, str]:
  """A BIDS scan's files in a BIDS-derivatives layout: its sub-/ses-/anat folders and entities.

  `sub-01_ses-1_FLAIR` gives `sub-01/ses-1/anat/sub-01_ses-1_desc-anomaly_FLAIR.nii.gz`,
  `..._desc-lesion_mask.nii.gz`, `..._desc-brain_mask.nii.gz`, and so on.
  """
  entities, suffix = source.name.rsplit("_", 1)
  folder = os.path.join(output_dir, source.bids_folder)
  names = {"anomaly_map": f"desc-anomaly_{suffix}.nii.gz",
           "reconstruction": f"desc-reconstruction_{suffix}.nii.gz",
           "prediction": "desc-lesion_mask.nii.gz", "brain_mask": "desc-brain_mask.nii.gz",
           "overlay": f"desc-overlay_{suffix}.png", "report": f"desc-report_{suffix}.json"}
  return {kind: os.path.join(folder, f"{entities}_{name}") for kind, name in names.items()}


def _write_derivative_description(output_dir: str) -> None:
  path = os.path.join(output_dir, "dataset_description.json")
  if not os.path.exists(path):
    atomic.write_json(path, {"Name": "brainseg_jax anomaly maps", "BIDSVersion": "1.9.0",
                             "DatasetType": "derivative",
                             "GeneratedBy": [{"Name": "brainseg_jax",
                                              "Version": brainseg_jax.__version__}]})


def output_paths(output_dir: str, name: str) -> dict[str, str]:
  """Every file predict writes for the scan called `name`, by kind."""
  kinds = {kind: f"{kind}.nii.gz" for kind in ("anomaly_map", "prediction", "reconstruction",
                                               "brain_mask")}
  kinds.update(overlay="overlay.png", report="report.json")
  return {kind: os.path.join(output_dir, f"{name}_{suffix}") for kind, suffix in kinds.items()}


def predict(workdir: str | None, input_path: str, output_dir: str,
            brain_mask: str | None = None, registration: str = "affine", n4: bool = True,
            calibration: str | None = None, extra_inputs=(), model: str | None = None,
            overwrite: bool = False, threshold: str = "healthy") -> dict:
  """Maps for a scan, or for every scan under a folder: one that fails is logged and skipped.

  The model: the run in `workdir`, or the shipped model named `model`. The
  input: a scan file, a folder tree of them, DICOM series or a BIDS dataset
  (data_prep/sources.py). `extra_inputs`: the session's further modalities,
  for a model of several channels and a single --input scan (a BIDS dataset
  finds them itself). Over a folder, scans whose report is already in
  `output_dir` are skipped unless `overwrite`. `threshold`: "healthy" (the
  model's fixed one) or "adaptive" (each scan's own, brainseg_jax/adaptive.py).
  Returns the written files by scan.
  """
  if bool(workdir) == bool(model):
    raise UserError("pass --workdir (a run of your own) or --model (a shipped one: "
                    "--list_models), not both or neither")
  if not os.path.exists(input_path):
    raise UserError(f"input {input_path} does not exist")
  single = os.path.isfile(input_path)
  if brain_mask and not single:
    raise UserError("--brain_mask goes with a single --input scan, not a folder")
  if extra_inputs and not single:
    raise UserError("--extra_inputs go with a single --input scan, not a folder")
  for path in extra_inputs:
    if not os.path.isfile(path):
      raise UserError(f"extra input {path} does not exist")
  output_dir = workdir_lib.ensure_writable(output_dir, "--output_dir")
  for path in atomic.remove_stale(output_dir):
    logging.info("removed %s, left by an interrupted run", path)
  model_info = None
  if model:
    model_info = {key: value for key, value in pretrained.card(model).items()
                  if key in ("name", "version")}
    workdir = pretrained.workdir(model)
  predictor = Predictor(workdir, registration, n4, calibration, model_info, threshold)
  channels = predictor.scan_scorer.channels
  found = scans.find_scans(input_path, channels[0])
  bids = sources.is_bids(input_path)
  session_of, unpaired = {}, {}
  if len(channels) > 1 and not bids and not single:  # a plain folder: sessions by file name
    session_of, unpaired = sources.sessions(found, channels)
    found = list(session_of) + list(unpaired)
    if not found:
      raise UserError(f"no {channels[0]} scans in {input_path} with a modality word in their "
                      f"names (e.g. case_{channels[0]}.nii.gz, case_{channels[1]}.nii.gz)")
  # Under a derivatives/ folder, a BIDS dataset's maps go into a BIDS-derivatives layout.
  derivatives = bids and "derivatives" in os.path.normpath(output_dir).split(os.sep)
  if derivatives:
    _write_derivative_description(output_dir)
  written = {source: bids_derivative_paths(output_dir, source) if derivatives
             else output_paths(output_dir, source.name) for source in found}

  def one(source):
    extra = extra_inputs
    if source in unpaired:
      raise UserError(unpaired[source])
    if source in session_of:
      extra = session_of[source]
    elif bids and len(channels) > 1:
      extra = sources.bids_session_files(source, channels[1:])
    with sources.as_nifti(source) as path:
      return predictor(path, output_dir, brain_mask, extra, label=str(source),
                       written=written[source])

  if single:  # one scan: its error is the command's one line
    return {input_path: one(found[0])}
  summary = FolderSummary(output_dir, found, written)
  todo = [s for s in found if overwrite or not os.path.isfile(summary.report_path(s))]
  if len(todo) < len(found):
    logging.info("%d of %d scans already done in %s (a report is there): skipped; "
                 "--overwrite does them again", len(found) - len(todo), len(found), output_dir)
  if not todo:
    summary.write()
    return {}
  results, _ = scans.for_each_scan(todo, one, summary.add)
  return {str(source): written for source, written in results.items()}


class FolderSummary:
  """summary.csv of a folder run: a row per scan, from its report, written whole each time."""

  def __init__(self, output_dir: str, found: list, written: dict):
    self.path = os.path.join(output_dir, SUMMARY_FILE)
    self.found, self.written = found, written
    self.skipped: dict = {}
    self.seconds: dict = {}

  def report_path(self, source) -> str:
    return self.written[source]["report"]

  def add(self, path: str, result, error: str | None, seconds: float) -> None:
    if error is None:
      self.skipped.pop(path, None)
      self.seconds[path] = seconds
    else:
      self.skipped[path] = (error, seconds)
    self.write()

  def write(self) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_SUMMARY_COLUMNS)
    for source in self.found:
      if source in self.skipped:
        error, seconds = self.skipped[source]
        writer.writerow([str(source), "skipped", error, *[""] * 8, f"{seconds:.1f}"])
      elif os.path.isfile(self.report_path(source)):
        writer.writerow(self._done_row(source))
    atomic.write_text(self.path, buffer.getvalue())

  def _done_row(self, path: str) -> list:
    with open(self.report_path(path)) as f:
      scan_report = json.load(f)
    qc = scan_report["registration_qc"]
    lesions = scan_report["lesions"]
    seconds = self.seconds.get(path)
    return [str(path), "done" if seconds is not None else "done (earlier run)", "",
            "not run" if qc is None else ("passed" if qc["passed"] else "failed"),
            f"{scan_report['threshold']:.6g}", scan_report["threshold_source"],
            f"{scan_report['brain_fraction_flagged']:.5f}",
            f"{scan_report['healthy_fpr_promised']:g}", len(lesions),
            f"{scan_report['total_lesion_volume_ml']:.2f}",
            f"{lesions[0]['volume_ml']:.2f}" if lesions else "0.00",
            "" if seconds is None else f"{seconds:.1f}"]


def main():
  flags.DEFINE_string("workdir", None, "A trained run's workdir (its checkpoint holds the "
                      "config); or --model.")
  flags.DEFINE_string("model", None, "A model shipped with the package, by name "
                      "(--list_models); instead of --workdir.")
  flags.DEFINE_bool("list_models", False, "Print the shipped models, one line each, and stop.")
  flags.DEFINE_string("input", None, "A scan (NIfTI, .mgz, .nrrd, .mha), a folder searched "
                      "recursively (also for DICOM series), or a BIDS dataset.")
  flags.DEFINE_string("brain_mask", None, "Brain mask of a single --input scan; by default the "
                      "template's, carried through the registration.")
  flags.DEFINE_list("extra_inputs", [], "For a model of several modalities: the session's "
                    "further scans of a single --input, in the order of the model's channels "
                    "after the first (e.g. T1,T1c for a FLAIR+T1+T1c model).")
  flags.DEFINE_string("output_dir", None, "Where the maps go (created).")
  flags.DEFINE_bool("overwrite", False, "Over a folder: do again the scans whose report is "
                    "already in --output_dir (by default they are skipped: a rerun resumes).")
  flags.DEFINE_enum("registration", "affine", ["affine", "none"], "'none' for scans already "
                    "in MNI152 space at the training grid.")
  flags.DEFINE_bool("n4", True, "N4 bias-field correction (off for already corrected scans).")
  flags.DEFINE_string("calibration", None, "Use the thresholds of this site's calibration "
                      "(python -m brainseg_jax.calibrate) instead of the model's own.")
  flags.DEFINE_enum("threshold", "healthy", ["healthy", "adaptive"], "healthy: the model's "
                    "threshold, set on healthy validation brains; adaptive: each scan's own, "
                    "from its map's median and spread inside the brain (for another site, "
                    "without its healthy scans to calibrate on).")
  cli.define_device_flags()

  def command():
    if FLAGS.list_models:
      print(pretrained.listing())
      return
    cli.require_flags("input", "output_dir")
    predict(FLAGS.workdir, FLAGS.input, FLAGS.output_dir, FLAGS.brain_mask, FLAGS.registration,
            FLAGS.n4, FLAGS.calibration, tuple(FLAGS.extra_inputs), FLAGS.model,
            FLAGS.overwrite, FLAGS.threshold)

  cli.run(command)


if __name__ == "__main__":
  main()
