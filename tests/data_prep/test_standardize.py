"""Nyúl standardisation, worked by hand: landmarks onto the standard scale, ends extrapolated."""

import numpy as np
import pytest

from data_prep import standardize
from data_prep.errors import PrepError

P = np.asarray(standardize.PERCENTILES)


def _linear_brain():
  """Intensities 0..100 evenly: percentile p is the intensity p."""
  return np.linspace(0.0, 100.0, 100_001)


def _squared_brain():
  """Intensities (u^2) * 100 for u even in [0, 1]: percentile p is p^2 / 100."""
  return np.linspace(0.0, 1.0, 100_001) ** 2 * 100.0


def test_the_standard_scale_is_the_mean_of_the_rescaled_landmarks():
  standard = standardize.fit([_linear_brain(), _squared_brain()])
  linear = (P - 1) / 98  # p1 -> 0, p99 -> 1
  squared = (P ** 2 / 100 - 0.01) / (98.01 - 0.01)
  np.testing.assert_allclose(standard.scale, (linear + squared) / 2, atol=1e-4)
  assert standard.num_scans == 2 and standard.percentiles == tuple(P)


def test_a_scan_s_landmarks_land_on_the_standard_scale():
  standard = standardize.fit([_linear_brain(), _squared_brain()])
  brain = _squared_brain()
  marks = P ** 2 / 100  # this scan's landmarks, by hand
  out = standardize.apply(np.concatenate([brain, marks]), np.ones(brain.size + P.size, bool),
                          standard)
  np.testing.assert_allclose(out[brain.size:], standard.scale, atol=1e-3)
  # Between two landmarks: linear; beyond the last: the last segment's slope, clipped at 1.5.
  mid = standardize.apply(np.array([(marks[5] + marks[6]) / 2, 100.0, 1e6]), np.ones(3, bool),
                          standard, marks)
  np.testing.assert_allclose(mid[0], (standard.scale[5] + standard.scale[6]) / 2, atol=1e-6)
  slope = (standard.scale[-1] - standard.scale[-2]) / (marks[-1] - marks[-2])
  np.testing.assert_allclose(mid[1], standard.scale[-1] + (100.0 - marks[-1]) * slope, atol=1e-6)
  assert mid[2] == standardize.CLIP_MAX


def test_outside_the_brain_is_zero_and_brightness_cannot_move_the_result():
  standard = standardize.fit([_linear_brain()])
  image = np.array([[5.0, 50.0], [90.0, 7.0]])
  brain = np.array([[True, True], [True, False]])
  out = standardize.apply(image, brain, standard)
  assert out[1, 1] == 0.0
  np.testing.assert_allclose(standardize.apply(3 * image + 10, brain, standard), out, atol=1e-6)


def test_the_scale_survives_a_round_trip_and_a_bad_file_is_named(tmp_path):
  standard = standardize.fit([_linear_brain(), _squared_brain()])
  standard.save(tmp_path / "s.json")
  assert standardize.StandardScale.load(tmp_path / "s.json") == standard
  (tmp_path / "bad.json").write_text("{")
  with pytest.raises(PrepError, match="bad.json: not a readable intensity standardisation"):
    standardize.StandardScale.load(tmp_path / "bad.json")
  with pytest.raises(PrepError, match="brain mask is empty"):
    standardize.apply(np.ones(3), np.zeros(3, bool), standard)
