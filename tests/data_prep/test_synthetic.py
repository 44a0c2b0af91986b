"""Tests for data_prep.synthetic: determinism, geometry, ground truth and contrast.

Resolution 32/64 keeps the whole module well under 30 s; the template is
cached per process so it is loaded once per resolution.
"""

import numpy as np
import pytest
from scipy import ndimage as ndi

from data_prep import synthetic
from data_prep.synthetic import (
  ANOMALIES,
  MODALITIES,
  Subject,
  Template,
  lesions,
  load_template,
  make_subject,
)


@pytest.fixture(scope="module")
def tpl64() -> Template:
  return load_template(64)


@pytest.fixture(scope="module")
def tpl32() -> Template:
  return load_template(32)


def test_template_geometry_and_tissues(tpl64, tpl32):
  assert load_template(64) is tpl64  # lru_cache: resampled once per process
  assert tpl64.gm.shape == (64, 64, 48)
  assert tpl32.gm.shape == (32, 32, 24)
  assert tpl64.spacing_mm == pytest.approx((3.0, 3.0, 160.0 / 48))
  for arr in (tpl64.gm, tpl64.wm, tpl64.csf):
    assert arr.dtype == np.float32 and arr.shape == tpl64.gm.shape
    assert arr.min() >= 0.0 and arr.max() <= 1.0
  assert tpl64.brain_mask.dtype == bool
  total = tpl64.gm + tpl64.wm + tpl64.csf
  assert total.max() <= 1.0 + 1e-5
  # Adult brain (incl. cerebellum/brainstem) is ~1.5-2 l.
  volume_ml = tpl64.brain_mask.sum() * np.prod(tpl64.spacing_mm) / 1000
  assert 1500 < volume_ml < 2200
  # WM dominates the deep centre, the brain is centred in the field of view.
  com = np.array(ndi.center_of_mass(tpl64.brain_mask))
  assert np.all(np.abs(com - (np.array(tpl64.gm.shape) - 1) / 2) < 4)
  assert tpl64.wm[tpl64.brain_mask].mean() > 0.3 and tpl64.gm[tpl64.brain_mask].mean() > 0.3
  # Not a cube: brain does not touch the field-of-view border.
  assert not tpl64.brain_mask[[0, -1]].any() and not tpl64.brain_mask[:, [0, -1]].any()


@pytest.mark.parametrize("anomaly", ANOMALIES)
def test_determinism(tpl32, anomaly):
  a = make_subject(tpl32, 7, "flair", anomaly)
  b = make_subject(tpl32, 7, "flair", anomaly)
  c = make_subject(tpl32, 8, "flair", anomaly)
  for field in ("image", "brain_mask", "anomaly_mask"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  assert not np.array_equal(a.image, c.image)
  assert not np.array_equal(a.brain_mask, c.brain_mask)  # anatomy varies with the seed


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("anomaly", ANOMALIES)
def test_shapes_dtypes_and_background(tpl32, modality, anomaly):
  s = make_subject(tpl32, 3, modality, anomaly)
  assert isinstance(s, Subject) and s.modality == modality and s.anomaly == anomaly
  for arr in (s.image, s.brain_mask, s.anomaly_mask):
    assert arr.shape == tpl32.gm.shape
  assert s.image.dtype == np.float32
  assert s.brain_mask.dtype == np.uint8 and s.anomaly_mask.dtype == np.uint8
  assert set(np.unique(s.brain_mask)) <= {0, 1} and set(np.unique(s.anomaly_mask)) <= {0, 1}
  assert np.all(s.image[s.brain_mask == 0] == 0)
  assert np.all(np.isfinite(s.image)) and s.image.min() >= 0 and s.image.max() <= 1.5
  inside = s.image[s.brain_mask == 1]
  assert 0.2 < inside.mean() < 0.9
  assert np.all(s.anomaly_mask <= s.brain_mask)


def test_anatomical_variation_is_moderate(tpl64):
  masks = [make_subject(tpl64, seed).brain_mask.astype(bool) for seed in range(3)]
  for other in masks[1:]:
    dice = 2 * (masks[0] & other).sum() / (masks[0].sum() + other.sum())
    assert 0.75 < dice < 0.99  # varied, but still the same organ


def test_healthy_has_empty_anomaly_mask(tpl64):
  for seed in range(3):
    assert make_subject(tpl64, seed, "t2", "none").anomaly_mask.sum() == 0


def test_anomaly_masks_nonempty_inside_brain_and_sized(tpl64):
  ms_vol, glioma_vol = [], []
  for seed in range(4):
    ms = make_subject(tpl64, seed, "flair", "ms")
    gl = make_subject(tpl64, seed, "flair", "glioma")
    for s in (ms, gl):
      assert s.anomaly_mask.sum() > 0
      assert np.all(s.brain_mask[s.anomaly_mask == 1] == 1)
    ms_vol.append(ms.anomaly_mask.sum())
    glioma_vol.append(gl.anomaly_mask.sum())
    # A glioma is one connected mass; MS gives several separate lesions.
    assert ndi.label(gl.anomaly_mask)[1] <= 3
  assert max(ms_vol) * 3 < min(glioma_vol)
  assert any(
    ndi.label(make_subject(tpl64, s, "flair", "ms").anomaly_mask)[1] >= 3 for s in range(4)
  )


@pytest.mark.parametrize("anomaly", ["ms", "glioma"])
def test_lesion_contrast_per_modality(tpl64, anomaly):
  # Same seed + "none" is the exact healthy counterpart (independent random
  # streams), so the lesion voxels can be compared with the tissue they replaced.
  for seed in range(2):
    flair = make_subject(tpl64, seed, "flair", anomaly)
    m = flair.anomaly_mask == 1
    healthy_flair = make_subject(tpl64, seed, "flair", "none").image[m]
    t1 = make_subject(tpl64, seed, "t1", anomaly)
    t2 = make_subject(tpl64, seed, "t2", anomaly)
    # Same seed, other modality: same anatomy and lesions.
    np.testing.assert_array_equal(t1.anomaly_mask, flair.anomaly_mask)
    healthy_t1 = make_subject(tpl64, seed, "t1", "none").image[m]
    healthy_t2 = make_subject(tpl64, seed, "t2", "none").image[m]
    assert flair.image[m].mean() > healthy_flair.mean() + 0.15
    assert t1.image[m].mean() < healthy_t1.mean() - 0.15
    assert t2.image[m].mean() > healthy_t2.mean() + 0.15


def test_ms_lesions_brighter_than_normal_wm_on_flair(tpl64):
  s = make_subject(tpl64, 2, "flair", "ms")
  h = make_subject(tpl64, 2, "flair", "none")
  m = s.anomaly_mask == 1
  # Normal-appearing WM: template voxels that are confidently WM, minus lesions.
  # (Compare on the healthy counterpart, whose anatomy is the same.)
  t1 = make_subject(tpl64, 2, "t1", "none")
  nawm = (t1.image > 0.75) & ~ndi.binary_dilation(m, iterations=2) & (h.brain_mask == 1)
  assert nawm.sum() > 1000
  assert s.image[m].mean() > s.image[nawm].mean() + 0.2
  assert make_subject(tpl64, 2, "t1", "ms").image[m].mean() < t1.image[nawm].mean() - 0.2


def test_healthy_tissue_contrast(tpl64):
  t1 = make_subject(tpl64, 0, "t1").image
  t2 = make_subject(tpl64, 0, "t2").image
  inside = make_subject(tpl64, 0).brain_mask == 1
  # T1 and T2 have opposite CSF/WM ordering, so they anti-correlate in the brain.
  assert np.corrcoef(t1[inside], t2[inside])[0, 1] < -0.5


def _outside_change(tpl, seed):
  gl = make_subject(tpl, seed, "flair", "glioma")
  healthy = make_subject(tpl, seed, "flair", "none")
  far = ~ndi.binary_dilation(gl.anomaly_mask == 1, iterations=2)
  diff = np.abs(gl.image - healthy.image)
  return int((far & (diff > 0.03)).sum()), gl, healthy, diff


def test_glioma_mass_effect_displaces_surrounding_tissue(tpl64):
  for seed in range(3):
    n_changed, gl, _, diff = _outside_change(tpl64, seed)
    # Tissue well outside the tumour moved (tissue boundaries shifted).
    assert n_changed > 30
    # ...but only locally: far from the tumour the paired images are identical.
    centre = np.array(ndi.center_of_mass(gl.anomaly_mask))
    idx = np.indices(diff.shape).reshape(3, -1).T
    dist_mm = np.linalg.norm((idx - centre) * np.array(tpl64.spacing_mm), axis=1)
    assert np.all(diff.reshape(-1)[dist_mm > 90] == 0)


def test_mass_effect_check_fails_without_mass_effect(tpl64, monkeypatch):
  # Control for the test above: with the push disabled, nothing outside the
  # (dilated) tumour mask may change, i.e. the mask is exact and the previous
  # test really measures the mass effect.
  monkeypatch.setattr(lesions, "mass_effect_source_radius", lambda r, *a, **k: r)
  for seed in range(3):
    assert _outside_change(tpl64, seed)[0] == 0


def test_mass_effect_map_is_monotone_and_local():
  r = np.linspace(0, 80, 4001)
  rho = synthetic.mass_effect_source_radius(r, pushed_radius=14.0, taper_start=15.0, taper_mm=25.0)
  assert np.all(np.diff(rho) >= -1e-12)  # no folding
  assert np.all(rho <= r + 1e-12)  # tissue pushed outward
  assert np.all(rho[r >= 40.0] == r[r >= 40.0])  # no effect beyond the taper
  assert (r - rho)[np.searchsorted(r, 16.0)] > 2.0


def test_invalid_arguments(tpl32):
  with pytest.raises(ValueError):
    make_subject(tpl32, 0, modality="dwi")
  with pytest.raises(ValueError):
    make_subject(tpl32, 0, anomaly="stroke")
