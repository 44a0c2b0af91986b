"""Registration quality control: numbers measured on every preprocessed volume, and the rule.

A registration that lands the template brain on the wrong part of the head
gives training slices of scalp and test maps of nonsense, and nothing
downstream notices. Three measures catch the failure modes seen on real scans,
none of which counts CSF as a failure (on FLAIR and T1 the CSF is as dark as
air, and an elderly brain's ventricles and sulci are wide):

- `volume_scale`: |det| of the template -> scan map. The MNI152 2009 brain is
  larger than nearly every adult brain; good fits shrink it (0.6-0.9 on IXI),
  the known failure (the template brain pulled over skull and scalp) grows it.
- `brain_outside_head`: the fraction of the template brain's core (deeper than
  one output voxel, where the scan covers it) outside the scan's head: the
  voxels above the background level (half the scan's Otsu head/air
  threshold), closed over 6 mm, holes filled. A shifted or rotated fit puts
  part of the brain in air. Ventricles and sulci lie inside the head and never
  count.
- `rim_dark_excess`: the template brain's rim (from one voxel to 10 mm deep)
  holds dark voxels where the template lies over the skull ring (dark bone
  under the template's edge, the scan's brain inside). Wide sulci darken the
  rim too, and wide ventricles the deep brain, so the measure is the rim's
  dark fraction minus the deep brain's, in the worst of the six half-spaces
  around the template brain's centre (a fit shifted to one side darkens one
  side's rim only).

A skull-stripped scan has no skull to lie over: its template rim lies on the
stripped background on a good fit too (rim excess 0.11-0.14 on the TCGA
scans). `tissue_around_brain`, the non-background fraction of a band 10-25 mm
outside the template brain (skull and scalp: 0.18-0.99 on unstripped scans,
0.00 on stripped ones), tells the two apart; a stripped scan is flagged only
when over 10 % of the template brain core lies outside the stripped brain.

All measures are taken on the 64 x 64 grid (`RESOLUTION`) whatever the output
resolution, so the ranges hold for every build.

Plus `brain_coverage`, the fraction of the template brain inside the scan's
field of view: partial-coverage scans (thick-slice 2D stacks) are normal, but
a scan that covers under half the brain is reported.

A volume is flagged when a measure leaves its range (`flag_reasons`). The
ranges come from the IXI T1, elderly FLAIR and LGG builds
(docs/registration_qc.md). Builders leave flagged volumes out of the
dataset and report them; they are never used silently.
"""

import dataclasses

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

# Plausible template -> scan volume scales of an adult brain (see data_prep/register.py). The
# upper end leaves room for scans whose spacing is estimated, not stored (the LGG tif stacks: good
# fits there reach 1.16, while the other measures catch their failures); below 0.5 the
# template brain would be shrunk to under 80 % of its size in every direction.
VOLUME_SCALE_RANGE = (0.5, 1.2)
# Output resolution whose grid (3 x 3 x 3.3 mm) every volume is measured on, whatever its own:
# the rim and the head mask then mean the same anatomy at every resolution, and the ranges
# below, chosen on this grid, hold for all (at 32 x 32, 6 mm voxels blur a 10 mm rim away).
RESOLUTION = 64
MAX_BRAIN_OUTSIDE_HEAD = 0.02
# Good fits darken the rim as much as their sulci are dark: FLAIR suppresses CSF to about the
# air level, so an elderly brain's wide sulci count (good elderly FLAIR and LGG fits reach 0.10,
# failures start at 0.13); on T1 (and T2, PD) the CSF lies mostly above the background level
# (good IXI T1 fits up to 0.05, its three worst fits by brain-mask Dice 0.09-0.16).
MAX_RIM_DARK_EXCESS = {"flair": 0.12}
MAX_RIM_DARK_EXCESS_OTHER = 0.07
MIN_BRAIN_COVERAGE = 0.5
# Skull-stripped scans: below this fraction of tissue 10-25 mm outside the template brain there
# is no skull or scalp to measure against; the template's rim lies on the stripped background
# even on a good fit, so only a larger share of the brain outside the "head" (the stripped brain)
# flags them.
MIN_TISSUE_AROUND_BRAIN = 0.05
MAX_BRAIN_OUTSIDE_STRIPPED = 0.10

# Rim depth, the gaps in the head mask that count as inside, and the band around the template
# brain where an unstripped scan shows skull and scalp (all in mm, so that every output
# resolution measures the same anatomy).
RIM_DEPTH_MM = 10.0
HEAD_CLOSING_MM = 6.0
AROUND_BRAIN_MM = (10.0, 25.0)


@dataclasses.dataclass(frozen=True)
class RegistrationQC:
  volume_scale: float
  brain_outside_head: float
  rim_dark_excess: float
  tissue_around_brain: float
  brain_coverage: float

  @property
  def skull_stripped(self) -> bool:
    return self.tissue_around_brain < MIN_TISSUE_AROUND_BRAIN

  def flag_reasons(self, modality: str) -> list[str]:
    """Why this registration of a `modality` scan is not trusted; empty if it passes."""
    reasons = []
    lo, hi = VOLUME_SCALE_RANGE
    if not lo <= self.volume_scale <= hi:
      reasons.append(f"template volume scale {self.volume_scale:.2f} outside {lo}-{hi}")
    most_outside = MAX_BRAIN_OUTSIDE_STRIPPED if self.skull_stripped else MAX_BRAIN_OUTSIDE_HEAD
    if self.brain_outside_head > most_outside:
      head = "the stripped brain" if self.skull_stripped else "the head"
      reasons.append(f"{100 * self.brain_outside_head:.1f}% of the template brain lies outside "
                     f"{head} (at most {100 * most_outside:.0f}%)")
    most_rim = max_rim_dark_excess(modality)
    if not self.skull_stripped and self.rim_dark_excess > most_rim:
      reasons.append(f"the template brain's rim is {100 * self.rim_dark_excess:.0f} points darker "
                     f"than its depth on one side (at most {100 * most_rim:.0f} on {modality}): "
                     "it lies over the skull")
    if self.brain_coverage < MIN_BRAIN_COVERAGE:
      reasons.append(f"the scan covers {100 * self.brain_coverage:.0f}% of the template brain "
                     f"(at least {100 * MIN_BRAIN_COVERAGE:.0f}%)")
    return reasons

  def to_arrays(self, prefix: str = "qc_") -> dict[str, np.ndarray]:
    return {prefix + f.name: np.asarray(getattr(self, f.name))
            for f in dataclasses.fields(self)}

  @classmethod
  def from_arrays(cls, arrays, prefix: str = "qc_"):
    """The QC stored with a volume, or None if it holds other measures (an older cache)."""
    names = [f.name for f in dataclasses.fields(cls)]
    if any(prefix + n not in arrays for n in names):
      return None
    return cls(**{n: float(arrays[prefix + n]) for n in names})


def problems(registration_qc: RegistrationQC | None, modality: str) -> list[str]:
  """Why a `modality` scan's registration is not trusted; empty if it passes or was not
  measured (caches and reports made before the QC existed)."""
  return registration_qc.flag_reasons(modality) if registration_qc is not None else []


def max_rim_dark_excess(modality: str) -> float:
  return MAX_RIM_DARK_EXCESS.get(modality, MAX_RIM_DARK_EXCESS_OTHER)


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
            image: np.ndarray, background_level: float, spacing_mm) -> RegistrationQC:
  """QC of one registration, from the output grid.

  `template_brain`, `in_view` (the voxels the scan covers) and `image` (the
  scan's intensities before normalisation) are all on the output grid, whose
  voxel size is `spacing_mm` (x, y, z).
  """
  brain = template_brain.astype(bool)
  in_view = in_view.astype(bool)
  dark = image < background_level
  depth = ndimage.distance_transform_edt(brain, sampling=spacing_mm)
  core = (depth > 1.01 * min(spacing_mm)) & in_view
  return RegistrationQC(
      volume_scale=float(abs(np.linalg.det(template_to_scan[:3, :3]))),
      brain_outside_head=float((~_head(dark, spacing_mm))[core].mean()) if core.any() else 1.0,
      rim_dark_excess=_rim_dark_excess(dark, brain, core, depth, in_view),
      tissue_around_brain=_tissue_around(dark, brain, in_view, spacing_mm),
      brain_coverage=float((brain & in_view).sum() / max(brain.sum(), 1)))


def _head(dark: np.ndarray, spacing_mm) -> np.ndarray:
  """The scan's head: not background, gaps up to HEAD_CLOSING_MM closed, holes filled."""
  iterations = max(1, round(HEAD_CLOSING_MM / min(spacing_mm)))
  return ndimage.binary_fill_holes(ndimage.binary_closing(~dark, iterations=iterations))


def _rim_dark_excess(dark, brain, core, depth, in_view) -> float:
  """Dark fraction of the rim minus that of the deep brain, worst of six half-spaces."""
  rim = core & (depth <= RIM_DEPTH_MM)
  deep = (depth > RIM_DEPTH_MM) & in_view
  if not rim.any() or not deep.any():
    return 0.0
  deep_dark = dark[deep].mean()
  centre = ndimage.center_of_mass(brain)
  worst = -1.0
  for axis in range(3):
    coordinate = np.arange(brain.shape[axis]) - centre[axis]
    for side in (coordinate < 0, coordinate > 0):
      half = rim & np.expand_dims(side, [a for a in range(3) if a != axis])
      if half.sum() >= 0.05 * rim.sum():  # a half-space the field of view barely reaches
        worst = max(worst, float(dark[half].mean() - deep_dark))
  return worst


def _tissue_around(dark, brain, in_view, spacing_mm) -> float:
  """Fraction of the band AROUND_BRAIN_MM outside the template brain that is not background."""
  distance = ndimage.distance_transform_edt(~brain, sampling=spacing_mm)
  near, far = AROUND_BRAIN_MM
  band = (distance > near) & (distance <= far) & in_view
  return float((~dark[band]).mean()) if band.any() else 0.0
