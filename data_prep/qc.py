"""Registration quality control: numbers measured on every preprocessed volume, and the rule.

A registration that lands the template brain on the wrong part of the head
gives training slices of scalp and test maps of nonsense, and nothing
downstream notices. Two measures catch the failure modes seen on real scans:

- `volume_scale`: |det| of the template -> scan map. The MNI152 2009 brain is
  larger than nearly every adult brain; good fits shrink it (0.6-0.9 on IXI),
  the known failure (the template brain pulled over skull and scalp) grows it.
- `brain_in_background`: the fraction of the template brain's core (the mask
  eroded by one output voxel, 1.5-6 mm), where the scan covers it, that lands
  on background (below half the scan's Otsu head/air threshold; at the full
  threshold dark FLAIR CSF counts too). A shifted or rotated fit puts part of
  the brain in air. The core, not the whole mask: a skull-stripped scan's
  brain is tighter than the template's, and its rim would count as air on a
  good fit (9.4 % of the whole mask on a TCGA FLAIR, 3.5 % of the core).

Plus `brain_coverage`, the fraction of the template brain inside the scan's
field of view: partial-coverage scans (thick-slice 2D stacks) are normal, but
a scan that covers under half the brain is reported.

A volume is flagged when a measure leaves its range (`flag_reasons`).
Builders leave flagged volumes out of the dataset and report them; they are
never used silently.
"""

import dataclasses

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

# Plausible template -> scan volume scales of an adult brain (see data_prep/register.py). The
# upper end leaves room for scans whose spacing is estimated, not stored (the LGG tif stacks: good
# fits there reach 1.16, while the background fraction catches their failures); below 0.5 the
# template brain would be shrunk to under 80 % of its size in every direction.
VOLUME_SCALE_RANGE = (0.5, 1.2)
MAX_BRAIN_IN_BACKGROUND = 0.05
MIN_BRAIN_COVERAGE = 0.5


@dataclasses.dataclass(frozen=True)
class RegistrationQC:
  volume_scale: float
  brain_in_background: float
  brain_coverage: float

  def flag_reasons(self) -> list[str]:
    """Why this registration is not trusted; empty if it passes."""
    reasons = []
    lo, hi = VOLUME_SCALE_RANGE
    if not lo <= self.volume_scale <= hi:
      reasons.append(f"template volume scale {self.volume_scale:.2f} outside {lo}-{hi}")
    if self.brain_in_background > MAX_BRAIN_IN_BACKGROUND:
      reasons.append(f"{100 * self.brain_in_background:.1f}% of the template brain lands on "
                     f"background (at most {100 * MAX_BRAIN_IN_BACKGROUND:.0f}%)")
    if self.brain_coverage < MIN_BRAIN_COVERAGE:
      reasons.append(f"the scan covers {100 * self.brain_coverage:.0f}% of the template brain "
                     f"(at least {100 * MIN_BRAIN_COVERAGE:.0f}%)")
    return reasons

  def to_arrays(self, prefix: str = "qc_") -> dict[str, np.ndarray]:
    return {prefix + f.name: np.asarray(getattr(self, f.name))
            for f in dataclasses.fields(self)}

  @classmethod
  def from_arrays(cls, arrays, prefix: str = "qc_"):
    """The QC stored with a volume, or None for a cache written before QC existed."""
    names = [f.name for f in dataclasses.fields(cls)]
    if any(prefix + n not in arrays for n in names):
      return None
    return cls(**{n: float(arrays[prefix + n]) for n in names})


# Background: below this fraction of the Otsu threshold (see the module docstring).
_BACKGROUND_FRACTION_OF_OTSU = 0.5


def background_level(working: sitk.Image) -> float:
  """The intensity below which a voxel of this scan counts as background (air)."""
  otsu = sitk.OtsuThresholdImageFilter()
  otsu.SetInsideValue(0)
  otsu.SetOutsideValue(1)
  otsu.SetNumberOfHistogramBins(200)
  otsu.Execute(working)
  return _BACKGROUND_FRACTION_OF_OTSU * float(otsu.GetThreshold())


def measure(template_to_scan: np.ndarray, template_brain: np.ndarray, in_view: np.ndarray,
            image: np.ndarray, background_level: float) -> RegistrationQC:
  """QC of one registration, from the output grid.

  `template_brain`, `in_view` (the voxels the scan covers) and `image` (the
  scan's intensities before normalisation) are all on the output grid.
  """
  brain = template_brain.astype(bool)
  in_view = in_view.astype(bool)
  coverage = (brain & in_view).sum() / max(brain.sum(), 1)
  core = ndimage.binary_erosion(brain) & in_view
  in_background = (image[core] < background_level).mean() if core.any() else 1.0
  return RegistrationQC(volume_scale=float(abs(np.linalg.det(template_to_scan[:3, :3]))),
                        brain_in_background=float(in_background),
                        brain_coverage=float(coverage))
