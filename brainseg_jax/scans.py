"""A trained model that turns raw scans into anomaly maps, and the loop over a folder of scans.

predict and calibrate both score new scans this way: the scan goes through the
training data's preprocessing (data_prep.pipeline) with the settings saved with
the model, then through the model's compiled scorer; one scan that fails is
named and skipped, and the others go on.
"""

import os
import time

import numpy as np
from absl import logging

from brainseg_jax import checkpoints, scoring, standardization
from brainseg_jax import config as config_lib
from brainseg_jax.datasets.input_pipeline import Volume
from brainseg_jax.errors import USER_ERRORS, UserError
from data_prep import cores, sources, standardize


def find_scans(path: str, modality: str = "flair") -> list[sources.Source]:
  """Every scan under `path` (data_prep/sources.py); folders that hold none are named."""
  if not os.path.exists(path):
    raise UserError(f"input {path} does not exist")
  found, problems = sources.find(path, modality)
  for folder, problem in problems.items():
    logging.error("skipped %s: %s", folder, problem)
  if not found:
    raise UserError(f"no scans in {path} (NIfTI, {', '.join(sources.OTHER_SUFFIXES)}, DICOM "
                    "series, or a BIDS dataset's anat images of the model's modality)")
  return found


class ScanScorer:
  """A trained model that turns a raw scan into its maps on the model's slice grid.

  The scan goes through the training data's preprocessing (`data_prep.pipeline`)
  with the settings saved with the model; one compiled scorer serves every scan.
  `threads` register it (default: every core of this process; ~1.6x faster on 2
  cores than one, but only one thread gives bit-reproducible registrations).
  `step`: the checkpoint to score with (default: the latest).
  """

  def __init__(self, workdir: str, registration: str = "affine", n4: bool = True,
               threads: int | None = None, step: int | None = None):
    from data_prep.config import PrepConfig

    self.workdir = workdir
    self.config = checkpoints.saved_config(workdir, step)
    self.channels = config_lib.modalities(self.config.dataset)
    # `step`: the checkpoint a threshold was set on; a run still training has newer ones.
    self.scorer, self.state, self.step = scoring.restore_scorer(self.config, workdir, step)
    self.standard = standardization.for_run(self.config, workdir)
    self.prep = PrepConfig(resolution=self.config.dataset.resolution,
                           modality=self.config.dataset.modality, registration=registration,
                           n4=n4)
    self.threads = threads or cores.usable()

  def __call__(self, scan_path: str, brain_mask_path: str | None = None, extra_paths=()):
    """(preprocessed scan, slices as a Volume, reconstruction, anomaly map) of one scan."""
    prepared = self.preprocess(scan_path, brain_mask_path, extra_paths)
    return (prepared, *self.score(prepared))

  def preprocess(self, scan_path: str, brain_mask_path: str | None = None, extra_paths=()):
    """The scan through the training data's preprocessing (`data_prep.pipeline.Preprocessed`).

    A model of several modalities needs the session's other scans too
    (`extra_paths`, in the order of its channels after the first): they go
    through the first scan's registration, as in the training data.
    """
    from data_prep import pipeline

    extra_paths = tuple(extra_paths)
    if len(extra_paths) != len(self.channels) - 1:
      wanted = ", ".join(self.channels[1:]) or "none"
      raise UserError(f"the model takes {len(self.channels)} modalities as channels "
                      f"({', '.join(self.channels)}): {scan_path} needs "
                      f"{len(self.channels) - 1} further scan(s) of the same session "
                      f"(--extra_inputs, in this order: {wanted}), got {len(extra_paths)}")
    # One scan at a time, so by default every core registers it (the transform then varies
    # by ~1e-3 between runs, see register.register_affine).
    return pipeline.preprocess(scan_path, self.prep, brain_mask_path=brain_mask_path,
                               extra_images=extra_paths, threads=self.threads)

  def score(self, prepared):
    """(slices as a Volume, reconstruction, anomaly map) of a preprocessed scan."""
    as_slices = lambda a: np.moveaxis(a, -1, 0)[..., None]  # (x, y, z) -> (z, x, y, 1)
    image, brain = as_slices(prepared.image), as_slices(prepared.brain_mask).astype(bool)
    if prepared.extra is not None and prepared.extra.shape[-1]:  # further modalities: channels
      image = np.concatenate([image, np.moveaxis(prepared.extra, 2, 0)], axis=-1)
    if self.standard is not None:  # onto the intensity scale the model was trained on
      image = standardize.apply(image, brain, self.standard)
    volume = Volume(os.path.basename(prepared.record.source_file), "unknown", image, brain,
                    as_slices(prepared.anomaly_mask).astype(bool))
    recon, anomaly = scoring.anomaly_maps(self.scorer, self.state, volume,
                                          self.config.eval.postprocess)
    require_finite(anomaly, prepared.record.source_file, self.workdir)
    return volume, recon, anomaly


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def require_finite(anomaly: np.ndarray, scan_path: str, workdir: str) -> None:
  """A map with NaN or inf is no result: its thresholded voxels would read as healthy."""
  bad = int(np.size(anomaly) - np.count_nonzero(np.isfinite(anomaly)))
  if bad:
    raise UserError(f"{scan_path}: the model in {workdir} gave {bad} non-finite anomaly scores "
                    "(NaN or inf): its checkpoint's parameters are not finite; retrain it")


def for_each_scan(paths: list, process, after_each=None) -> tuple[dict, dict]:
  """`process(path)` for every scan: one that fails is logged and skipped, the rest go on.

  `paths`: file paths or `sources.Source`s. Logs progress (scan i of N, seconds
  a scan, time left); `after_each(path, result, error, seconds)` is called
  after every scan (predict's summary.csv). Returns (results, errors), each by
  path; raises when no scan could be processed.
  """
  results, failures = {}, {}
  start = time.monotonic()
  for i, path in enumerate(paths, 1):
    scan_start = time.monotonic()
    error = None
    try:
      results[path] = process(path)
    except USER_ERRORS as e:
      error = str(e)
    except Exception as e:  # noqa: BLE001  (a scan nobody foresaw must not stop the others)
      error = f"{type(e).__name__}: {e}"
    if error is not None:
      failures[path] = error
      logging.error("skipped %s: %s", path, error)
    if after_each is not None:
      after_each(path, results.get(path), error, time.monotonic() - scan_start)
    if len(paths) > 1:
      per_scan = (time.monotonic() - start) / i
      logging.info("scan %d of %d (%s) %s, %.1f s a scan, about %s left", i, len(paths),
                   path, "skipped" if error else "done", per_scan,
                   _duration(per_scan * (len(paths) - i)))
  logging.info("%d of %d scans done, %d skipped", len(results), len(paths), len(failures))
  if not results:
    raise UserError(f"no scan could be processed; first error: {next(iter(failures.values()))}")
  return results, failures
