"""One volume from raw NIfTI files to axial slices on the template grid, and back.

Steps, each switchable in `PrepConfig` (see docs/data.md):
load + validate -> reorient to RAS -> resample to the working spacing -> N4 ->
affine registration to MNI152 (searched again from smaller starts when registration
QC flags the fit) -> brain mask (given, or the template's carried
through the registration) -> one interpolation onto the fixed output grid
(crop/pad to the FOV, axial slices, resize to the resolution) -> intensity
normalisation inside the brain -> slice selection.

Lesion and brain masks never go through the working image: they are
interpolated straight from their own file onto the output grid with the same
world map as the image, so they stay aligned with it by construction.

`VolumeRecord` holds what maps a slice stack back to the original file's grid
(`to_original_grid`), which is what a prediction command needs to write
anomaly maps onto the user's scan.
"""

from __future__ import annotations

import dataclasses
import os

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from data_prep import (
    bias,
    grid,
    load,
    normalize,
    orient,
    qc,
    register,
    resample,
    template,
    timing,
)
from data_prep.config import PrepConfig
from data_prep.errors import InputFileError


@dataclasses.dataclass(frozen=True)
class VolumeRecord:
  """Geometry linking the output slices to the original scan (all RAS world, mm)."""

  source_file: str
  original_affine: np.ndarray  # 4x4, as stored in the input file
  original_shape: tuple[int, int, int]
  template_to_scan: np.ndarray  # 4x4 world map: template (output grid) world -> scan world
  grid_affine: np.ndarray  # 4x4 voxel -> template world of the full output grid
  grid_shape: tuple[int, int, int]
  slice_indices: np.ndarray  # output-grid axial slices kept, in order

  def to_arrays(self, prefix: str = "record_") -> dict[str, np.ndarray]:
    return {prefix + f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}

  @classmethod
  def from_arrays(cls, arrays, prefix: str = "record_") -> VolumeRecord:
    get = lambda name: np.asarray(arrays[prefix + name])
    return cls(source_file=str(get("source_file")),
               original_affine=get("original_affine").astype(np.float64),
               original_shape=tuple(int(s) for s in get("original_shape")),
               template_to_scan=get("template_to_scan").astype(np.float64),
               grid_affine=get("grid_affine").astype(np.float64),
               grid_shape=tuple(int(s) for s in get("grid_shape")),
               slice_indices=get("slice_indices").astype(np.int64))


@dataclasses.dataclass(frozen=True)
class Preprocessed:
  """Output volumes (x, y, z) on the output grid, z = kept axial slices."""

  image: np.ndarray  # float32, normalised inside brain, 0 outside
  brain_mask: np.ndarray  # uint8
  anomaly_mask: np.ndarray  # uint8, inside brain_mask
  record: VolumeRecord
  notes: tuple[str, ...] = ()
  # Registration quality control (None for caches written before it existed).
  qc: qc.RegistrationQC | None = None
  # Further modalities (x, y, z, E), normalised like `image`; E = 0 without any.
  extra: np.ndarray | None = None
  # The validated input scan as loaded (float32, its own grid), for a caller that shows
  # results on top of it; not cached.
  scan: nib.Nifti1Image | None = None
  # Wall seconds per preprocessing stage (timing.Stopwatch); not cached.
  timings: dict[str, float] = dataclasses.field(default_factory=dict)


def preprocess(image_path, config: PrepConfig, anomaly_mask_path=None,
               brain_mask_path=None, extra_images=(), threads: int = 1,
               template_to_scan: np.ndarray | None = None) -> Preprocessed:
  """Preprocess one scan (and its optional masks on the scan's grid).

  `extra_images`: other modalities of the same session (in world register with
  the scan, any grid): each is bias-corrected and normalised like the scan and
  mapped through the scan's registration, so the channels stay aligned.
  `threads`: SimpleITK threads (N4, registration); 1 keeps the result bit-reproducible.
  `template_to_scan`: a registration found before (a cached volume whose QC is
  measured anew): used as it is, not searched again. A fit found here that
  registration QC flags is searched again from smaller starts
  (`_searched_again_if_flagged`); a fit that passes is kept, with a note.
  """
  # One thread: reproducible, and builds run one volume per core. A caller with one scan to
  # process (predict) passes every core: faster, at a tiny run-to-run variation
  # (register.register_affine).
  sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
  notes = []
  watch = timing.Stopwatch()
  with watch.stage("load"):
    raw = load.load_volume(image_path)
    if note := load.orientation_note(raw):
      notes.append(note)
    anomaly_raw = (load.load_mask(anomaly_mask_path, raw, image_path)
                   if anomaly_mask_path else None)
    if config.brain_mask == "given" and not brain_mask_path:
      raise InputFileError(image_path, "config asks for a given brain mask but none was found")
    use_given = bool(brain_mask_path) and config.brain_mask in ("given", "auto")
    brain_raw = load.load_mask(brain_mask_path, raw, image_path) if use_given else None

  working = _working_image(raw, config, brain_raw, notes, watch)
  searched = template_to_scan is None and config.registration == "affine"
  with watch.stage("registration"):
    if template_to_scan is not None:
      template_to_scan = np.asarray(template_to_scan, np.float64)
    elif config.registration == "affine":
      template_to_scan = _register(image_path, working, config, threads)
    elif config.registration == "none":
      template_to_scan = np.eye(4)
    else:
      raise ValueError(f"registration must be 'affine' or 'none', got {config.registration!r}")
  registration_qc = None
  if config.registration == "affine":
    with watch.stage("to output grid, masks, QC"):
      registration_qc = _measured_qc(working, template_to_scan)
    if searched:
      template_to_scan, registration_qc = _searched_again_if_flagged(
          image_path, working, template_to_scan, registration_qc, config, threads, notes, watch)

  prepared = _on_output_grid(image_path, raw, working, template_to_scan, brain_raw,
                             anomaly_raw, config, extra_images, notes, watch, registration_qc)
  return dataclasses.replace(prepared, timings=watch.seconds)


def _searched_again_if_flagged(image_path, working, template_to_scan, registration_qc,
                               config: PrepConfig, threads, notes, watch):
  """(fit, its QC): the first fit, or the first from a smaller start that passes the QC it failed.

  A second search runs only for a flagged fit (a few scans in a hundred), from each
  of register.RETRY_START_SCALES in turn; if none passes, the first fit and its
  flags stand.
  """
  if not registration_qc.flag_reasons(config.modality):
    return template_to_scan, registration_qc
  for start_scale in register.RETRY_START_SCALES:
    with watch.stage("registration"):
      other = _register(image_path, working, config, threads, start_scales=(start_scale,))
    with watch.stage("to output grid, masks, QC"):
      other_qc = _measured_qc(working, other)
    if not other_qc.flag_reasons(config.modality):
      notes.append(f"registration searched again from a template shrunk to {start_scale} of "
                   "its size: the first fit failed QC "
                   f"({'; '.join(registration_qc.flag_reasons(config.modality))})")
      return other, other_qc
  return template_to_scan, registration_qc


def _scan_on_grid(data, working_affine, g: grid.Grid, template_to_scan):
  """(the scan resampled onto grid `g`, the voxels of `g` that the scan covers).

  Partial-coverage scans (thick-slice 2D stacks) leave the template brain partly
  outside their field of view, where there is no image to learn or score.
  """
  image = resample.resample_grid(data, working_affine, g.shape, g.affine, template_to_scan)
  in_view = resample.resample_grid(np.ones(data.shape, np.float32), working_affine, g.shape,
                                   g.affine, template_to_scan, antialias=False) > 0.99
  return image, in_view


def _measured_qc(working: sitk.Image, template_to_scan) -> qc.RegistrationQC:
  """Registration QC on the grid its ranges were chosen on (qc.RESOLUTION), whatever the
  output's."""
  data, working_affine = orient.from_sitk(working)
  g = grid.output_grid(qc.RESOLUTION)
  image, in_view = _scan_on_grid(data, working_affine, g, template_to_scan)
  return qc.measure(template_to_scan, np.array(grid.template_brain_mask(qc.RESOLUTION)), in_view,
                    image, qc.background_level(working), g.spacing_mm)


def _on_output_grid(image_path, raw, working, template_to_scan, brain_raw, anomaly_raw,
                    config: PrepConfig, extra_images, notes, watch,
                    registration_qc: qc.RegistrationQC | None) -> Preprocessed:
  """The registered scan and its masks on the output grid, normalised, with its QC.

  `registration_qc` is None when nothing was registered (registration="none": the
  scan is declared in template space).
  """
  g = grid.output_grid(config.resolution)
  with watch.stage("to output grid, masks, QC"):
    data, working_affine = orient.from_sitk(working)
    image, in_view = _scan_on_grid(data, working_affine, g, template_to_scan)
    template_brain = np.array(grid.template_brain_mask(config.resolution))
    if brain_raw is not None:
      brain = resample.resample_grid((brain_raw.get_fdata() > 0).astype(np.float32),
                                     raw.affine, g.shape, g.affine, template_to_scan) > 0.5
    else:
      brain = template_brain
    if config.brain_within_view:
      brain &= in_view
    if not brain.any():
      raise InputFileError(image_path, "brain mask is empty on the output grid")
    if anomaly_raw is not None:
      anomaly = resample.resample_grid((anomaly_raw.get_fdata() > 0).astype(np.float32),
                                       raw.affine, g.shape, g.affine, template_to_scan) > 0.5
      anomaly &= brain
    else:
      anomaly = np.zeros(g.shape, bool)
    image = _normalized(image, brain, config)
  extra = np.zeros((*g.shape, 0), np.float32)
  if extra_images:
    with watch.stage("extra modalities"):
      extra = np.stack([
          _extra_channel(path, raw, config, brain_raw, brain, template_to_scan, g, notes)
          for path in extra_images], axis=-1)

  keep = grid.select_slices(config.resolution, config.slices, config.min_brain_fraction)
  record = VolumeRecord(
      source_file=os.path.abspath(str(image_path)), original_affine=np.asarray(raw.affine),
      original_shape=tuple(int(s) for s in raw.shape), template_to_scan=template_to_scan,
      grid_affine=np.asarray(g.affine), grid_shape=g.shape, slice_indices=keep)
  return Preprocessed(image=image[:, :, keep].astype(np.float32),
                      brain_mask=brain[:, :, keep].astype(np.uint8),
                      anomaly_mask=anomaly[:, :, keep].astype(np.uint8),
                      record=record, notes=tuple(notes), qc=registration_qc,
                      extra=extra[:, :, keep].astype(np.float32), scan=raw)


def _working_image(raw, config: PrepConfig, brain_raw, notes: list,
                   watch: timing.Stopwatch | None = None) -> sitk.Image:
  """The scan in RAS, at the working spacing, bias-corrected: what is registered and sampled."""
  watch = watch or timing.Stopwatch()
  with watch.stage("reorient, resample"):
    img = orient.to_ras(raw)
    working = orient.to_sitk(img.get_fdata(dtype=np.float32), img.affine)
    if config.resample and config.target_spacing_mm > 0:
      working = resample.to_spacing(working, config.target_spacing_mm)
  if not config.n4:
    return working
  with watch.stage("N4 bias correction"):
    n4_mask = None
    if brain_raw is not None:
      brain_ras = orient.to_ras(brain_raw)
      n4_mask = sitk.Cast(sitk.Resample(
          orient.to_sitk((brain_ras.get_fdata() > 0).astype(np.uint8), brain_ras.affine),
          working, sitk.Transform(), sitk.sitkNearestNeighbor, 0), sitk.sitkUInt8)
    working, why = bias.n4_correct(working, config.n4_shrink, config.n4_iterations, n4_mask)
    if why:
      notes.append(f"N4 skipped: {why}")
  return working


def _normalized(image: np.ndarray, brain: np.ndarray, config: PrepConfig) -> np.ndarray:
  if config.normalize:
    return normalize.percentile_scale(image, brain, config.percentiles, config.clip_max)
  return np.where(brain, image, 0.0).astype(np.float32)


def _extra_channel(path, reference, config, brain_raw, brain, template_to_scan, g, notes):
  """Another modality of the session on the output grid, through the scan's registration."""
  raw = load.load_volume(path)
  ref_centre = reference.affine @ [*(np.asarray(reference.shape[:3]) / 2), 1]
  centre = raw.affine @ [*(np.asarray(raw.shape[:3]) / 2), 1]
  if np.linalg.norm(ref_centre[:3] - centre[:3]) > 50.0:
    raise InputFileError(path, "lies over 50 mm from the scan it should be in register with "
                               f"({reference.get_filename()}): not the same session?")
  working = _working_image(raw, config, brain_raw, notes)
  data, affine = orient.from_sitk(working)
  channel = resample.resample_grid(data, affine, g.shape, g.affine, template_to_scan)
  return _normalized(channel, brain, config)


def _register(image_path, working: sitk.Image, config: PrepConfig, threads: int = 1,
              **kwargs) -> np.ndarray:
  """Affine registration to the template, with SimpleITK's failures as the scan's own error.

  `kwargs` go to register.register_affine (`start_scales` for a second search).
  """
  try:
    return register.register_affine(working, config.registration_seed,
                                    config.registration_metric, threads, **kwargs)
  except RuntimeError as e:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    cause = lines[-1] if lines else type(e).__name__
    raise InputFileError(image_path, f"registration to the MNI152 template failed: {cause}") from e


def to_original_grid(slice_stack, record: VolumeRecord, order: int = 1) -> nib.Nifti1Image:
  """A slice stack mapped back onto the original scan's grid (its affine and shape).

  `slice_stack` is (S, R, R) or (S, R, R, 1) as `load_volumes` returns it, S =
  the kept slices. `order` 0 (nearest) for label maps, 1 (linear) for
  continuous maps such as anomaly scores. Voxels outside the output grid's
  field of view are 0.
  """
  stack = np.asarray(slice_stack, dtype=np.float32)
  if stack.ndim == 4:
    stack = stack[..., 0]
  if stack.shape[0] != len(record.slice_indices) or stack.shape[1:] != record.grid_shape[:2]:
    raise ValueError(f"slice stack {stack.shape} does not match the record: "
                     f"{len(record.slice_indices)} slices of {record.grid_shape[:2]}")
  volume = np.zeros(record.grid_shape, np.float32)
  volume[:, :, record.slice_indices] = np.moveaxis(stack, 0, -1)
  out = resample.resample_grid(volume, record.grid_affine, record.original_shape,
                               record.original_affine, np.linalg.inv(record.template_to_scan),
                               order=order, antialias=False)
  return nib.Nifti1Image(out.astype(np.float32), record.original_affine)


def template_mask_on_scan(record: VolumeRecord) -> np.ndarray:
  """The 1 mm template brain mask carried through the registration onto the scan's grid."""
  _, mask, affine = template.load()
  return resample.resample_grid(mask.astype(np.float32), affine, record.original_shape,
                                record.original_affine,
                                np.linalg.inv(record.template_to_scan)) > 0.5
