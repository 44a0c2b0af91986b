"""N4 bias-field correction (SimpleITK), fitted on a shrunk copy for speed.

Expects intensities proportional to signal: positive inside the head, with a
background near zero. It checks that; a scan that is already z-scored (many
non-positive voxels inside the foreground) is returned unchanged with a reason,
because N4's log-domain model is meaningless for it.
"""

import numpy as np
import SimpleITK as sitk


def n4_correct(image: sitk.Image, shrink: int = 4,
               iterations=(50, 40, 30), mask: sitk.Image | None = None
               ) -> tuple[sitk.Image, str]:
  """(bias-corrected image, "" or the reason it was skipped)."""
  image = sitk.Cast(image, sitk.sitkFloat32)
  if mask is None:
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
  values = sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(mask) > 0]
  if values.size == 0:
    return image, "empty foreground"
  if np.mean(values <= 0) > 0.01:
    return image, "non-positive intensities inside the foreground (already normalised?)"
  shrink = max(1, int(shrink))
  small = sitk.Shrink(image, [shrink] * 3)
  small_mask = sitk.Shrink(mask, [shrink] * 3)
  corrector = sitk.N4BiasFieldCorrectionImageFilter()
  corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
  corrector.Execute(small, small_mask)
  # The fitted B-spline field, evaluated on the full-resolution grid.
  log_bias = corrector.GetLogBiasFieldAsImage(image)
  return sitk.Cast(image / sitk.Exp(log_bias), sitk.sitkFloat32), ""
