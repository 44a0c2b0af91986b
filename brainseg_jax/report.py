"""The per-scan report of predict: what was flagged, how much, and how far to trust it.

A threshold promises to flag a fraction `healthy_fpr` of a healthy brain. A
scan where it flags several times that is either very abnormal or unlike the
data the threshold was set on (another scanner or site); the report says so,
so that a user does not read a site effect as disease. A registration that
fails quality control (data_prep/qc.py) is reported and warned about too.
"""

import dataclasses
import math

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainseg_jax import metrics
from brainseg_jax.workdir import Threshold
from data_prep.qc import RegistrationQC
from data_prep.qc import problems as qc_problems

# A scan flagged beyond this multiple of the promised fraction gets a warning.
WARNING_FACTOR = 3.0
# In every report: what the maps are for (README, "Intended use").
INTENDED_USE = "research use only, not for diagnosis"


def lesion_components(prediction: nib.Nifti1Image) -> list[dict]:
  """The lesions of a 0/1 map (metrics.LESION_CONNECTIVITY), largest first, in scanner units."""
  mask = np.asarray(prediction.dataobj) > 0
  labels, count = metrics.lesion_components(mask)
  if count == 0:
    return []
  voxel_ml = abs(np.linalg.det(prediction.affine[:3, :3])) / 1000.0
  ids = np.arange(1, count + 1)
  sizes = ndimage.sum_labels(mask, labels, ids)
  centres = ndimage.center_of_mass(mask, labels, ids)
  components = []
  for size, centre in sorted(zip(sizes, centres, strict=True), key=lambda c: -c[0]):
    world = prediction.affine[:3, :3] @ np.asarray(centre) + prediction.affine[:3, 3]
    components.append({"voxels": int(size), "volume_ml": float(size * voxel_ml),
                       "centre_scanner_mm": [round(float(c), 2) for c in world]})
  return components


def scan_report(scan_path: str, threshold: Threshold, flagged_fraction: float,
                prediction: nib.Nifti1Image, registration_qc: RegistrationQC | None = None,
                standardization: str = "none", *, modality: str, notes=()) -> dict:
  """Everything the report JSON holds; `flagged_fraction` is measured inside the brain mask.

  `modality`: of the registered scan, for the registration QC rule. `notes`:
  what preprocessing chose on its own (N4 skipped, which orientation was used).
  Every number is finite (strict JSON): an undefined QC measure is null.
  """
  lesions = lesion_components(prediction)
  qc_reasons = qc_problems(registration_qc, modality)
  report = {
      "intended_use": INTENDED_USE,
      "scan": scan_path,
      "threshold": threshold.value,
      "threshold_source": threshold.source,
      "checkpoint_step": threshold.checkpoint_step,
      "healthy_fpr_promised": threshold.healthy_fpr,
      "brain_fraction_flagged": flagged_fraction,
      "intensity_standardization": standardization,
      # None when nothing was registered (--registration=none).
      "registration_qc": (None if registration_qc is None else
                          {**_finite_or_none(dataclasses.asdict(registration_qc)),
                           "skull_stripped": registration_qc.skull_stripped,
                           "passed": not qc_reasons, "problems": qc_reasons}),
      "preprocessing_notes": list(notes),
      "warning": None,
      "lesions": lesions,
      "total_lesion_volume_ml": float(sum(c["volume_ml"] for c in lesions)),
  }
  warnings = []
  if qc_reasons:
    warnings.append(f"registration to the template looks wrong ({'; '.join(qc_reasons)}): "
                    "the maps may be meaningless; check the overlay")
  if flagged_fraction > WARNING_FACTOR * threshold.healthy_fpr:
    warnings.append(
        f"{flagged_fraction:.1%} of the brain is flagged where the threshold flags "
        f"{threshold.healthy_fpr:.1%} of a healthy brain: the scan is very abnormal or unlike "
        "the data the threshold was set on (another scanner or site?); calibrate on a few "
        "healthy scans of this site: python -m brainseg_jax.calibrate")
  report["warning"] = " ".join(warnings) or None
  return report


def _finite_or_none(record: dict) -> dict:
  return {k: None if isinstance(v, float) and not math.isfinite(v) else v
          for k, v in record.items()}


def caption(report: dict) -> str:
  """One or two lines under the overlay figure."""
  source = report["threshold_source"].split(":")[0]  # "model evaluation", "calibration 'x'"
  text = (f"threshold {report['threshold']:.3g} ({source}, flags "
          f"{report['healthy_fpr_promised']:.0%} of a healthy brain); "
          f"{report['brain_fraction_flagged']:.2%} of the brain flagged, "
          f"{len(report['lesions'])} components, {report['total_lesion_volume_ml']:.1f} mL")
  qc = report["registration_qc"]
  if qc is not None and not qc["passed"]:
    text += "\nWARNING: registration QC failed: " + qc["problems"][0]
  if report["brain_fraction_flagged"] > WARNING_FACTOR * report["healthy_fpr_promised"]:
    text += f"\nWARNING: {report['brain_fraction_flagged']:.1%} flagged, " \
            f"{report['healthy_fpr_promised']:.1%} promised: scan unlike the calibration data"
  return text
