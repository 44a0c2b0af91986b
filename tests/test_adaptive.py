"""The per-scan adaptive threshold: a scan judged by its own map, never by labels."""

import inspect

import numpy as np

from brainseg_jax import adaptive


def _scan(rng, lesion_value=8.0):
  scores = np.abs(rng.normal(size=20_000)).astype(np.float32)
  scores[:200] = lesion_value  # 1 % of the brain: a lesion
  return scores


def test_a_rescaled_and_shifted_map_flags_the_same_voxels():
  rng = np.random.default_rng(0)
  scores = _scan(rng)
  k = 8.0
  flagged = scores > adaptive.scan_threshold(scores, k)
  other_site = 2.5 * scores + 0.7  # the same anatomy, another scanner's scale
  assert np.array_equal(other_site > adaptive.scan_threshold(other_site, k), flagged)
  assert flagged[:200].all() and flagged[200:].mean() < 0.001


def test_the_spread_is_not_zero_when_half_the_map_is():
  scores = np.concatenate([np.zeros(10_000), np.linspace(0, 1, 10_000)])
  centre, spread = adaptive.centre_and_spread(scores)
  assert centre == 0.0 and spread > 0.2
  constant = np.zeros(1000)
  assert adaptive.centre_and_spread(constant)[1] > 0
  assert not (constant > adaptive.scan_threshold(constant, 1.0)).any()


def test_lesions_barely_move_the_threshold():
  rng = np.random.default_rng(1)
  clean = _scan(rng, lesion_value=0.0)
  with_lesion = clean.copy()
  with_lesion[:1000] = 5.0  # 5 % of the brain
  moved = adaptive.scan_threshold(with_lesion, 3.0) / adaptive.scan_threshold(clean, 3.0)
  assert 1.0 < moved < 1.15  # 5 % of the brain


def test_no_function_takes_labels():
  for name, function in inspect.getmembers(adaptive, inspect.isfunction):
    params = set(inspect.signature(function).parameters)
    assert not params & {"truth", "labels", "anomaly_mask", "lesion"}, name
