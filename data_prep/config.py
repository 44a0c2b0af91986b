"""Which preprocessing steps run, and their parameters.

One frozen dataclass, so a build is fully described by (files, config) and the
config can be hashed into the cache key: change any field and cached volumes
are redone. Every step can be switched off for data that already had it (e.g.
`n4=False` for scans that are already bias-corrected and z-scored).
"""

import dataclasses
import hashlib
import json


@dataclasses.dataclass(frozen=True)
class PrepConfig:
  """Preprocessing of one volume into axial slices on the template-space grid."""

  # Output grid: R x R in-plane over a fixed FOV, slices as in data_prep.synthetic.
  resolution: int = 128
  modality: str = "t1"
  # Resample the reoriented scan to isotropic spacing (mm) before N4 and registration;
  # 0 keeps the scan's own spacing.
  resample: bool = True
  target_spacing_mm: float = 1.5
  # N4 bias-field correction, fitted on an image shrunk by `n4_shrink` for speed.
  n4: bool = True
  n4_shrink: int = 6
  n4_iterations: tuple[int, ...] = (50, 40, 30)
  # Affine registration to MNI152 2009a ("affine" or "none": scan already in template space).
  registration: str = "affine"
  registration_metric: str = "mattes_mi"  # mutual information works across contrasts
  # Seed of the metric's voxel sampling; must be > 0 (SimpleITK takes 0 as "seed from the
  # clock", which made registrations differ from run to run).
  registration_seed: int = 1
  # Brain extraction: "given" uses the brain-mask file (error if missing), "template" carries
  # the template brain mask through the registration, "auto" uses a given mask when present.
  brain_mask: str = "auto"
  # Keep only the brain voxels inside the scan's field of view (a partial-coverage scan's
  # missing slab is not brain to train on or to score).
  brain_within_view: bool = True
  # Intensity normalisation inside the brain: (p_low, p_high) percentiles map to 0 and 1.
  normalize: bool = True
  percentiles: tuple[float, float] = (1.0, 99.0)
  clip_max: float = 1.5
  # Axial slices: "all" keeps every slice of the fixed grid (as synthetic_brain does);
  # "brain" keeps the slices where the template brain mask has >= min_brain_fraction.
  slices: str = "all"
  min_brain_fraction: float = 0.01

  def digest(self) -> str:
    """Short stable hash of every field: part of the cache key of preprocessed volumes."""
    from data_prep import register  # the registration code's version is part of the result
    text = json.dumps({**dataclasses.asdict(self), "registration_version": register.VERSION},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
