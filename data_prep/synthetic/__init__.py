"""Deterministic synthetic brain MRI subjects with exactly known anomalies.

Unsupervised anomaly-segmentation models are trained on healthy scans only and
evaluated on scans with lesions, which requires voxel-exact ground truth that
real data sets rarely provide.  This package fabricates such data from the
MNI152 2009a template shipped inside the nilearn wheel (`data_prep.template`;
no download and no licence-restricted data), on the working grid of
`data_prep.grid`:

* `anatomy`: the template's tissue maps resampled once onto the grid
  (:func:`load_template`, cached per resolution), then a random affine +
  elastic deformation per subject;
* `lesions`: MS-like white-matter lesions, or a glioma with mass effect;
* `contrast`: FLAIR, T1 or T2 intensities, bias field and Rician noise;
* `subject`: :func:`make_subject`, which splits the seed into independent
  streams so that healthy/pathological and multi-modal subjects with the same
  seed are paired.

Array convention: all volumes are ``(x, y, z)`` in RAS voxel order
(left->right, posterior->anterior, inferior->superior); axial slice ``k`` is
``volume[:, :, k]``.
"""

from data_prep.synthetic.anatomy import Template, load_template
from data_prep.synthetic.contrast import MODALITIES
from data_prep.synthetic.lesions import ANOMALIES, mass_effect_source_radius
from data_prep.synthetic.subject import Subject, make_subject

__all__ = [
  "ANOMALIES",
  "MODALITIES",
  "Subject",
  "Template",
  "load_template",
  "make_subject",
  "mass_effect_source_radius",
]
