import jax
import numpy as np

from brainseg_jax import scoring
from brainseg_jax.models import create_model
from configs import threshold


def test_baseline_map_is_the_normalised_input_inside_the_brain():
  config = threshold.get_config("smoke")
  model = create_model(config)
  assert not model.trainable
  images = np.random.default_rng(0).random((4, 64, 64, 1)).astype(np.float32)
  brain = np.zeros_like(images, bool)
  brain[:, 10:50, 12:40] = True
  scorer = scoring.VolumeScorer(model, "abs")
  state = scorer.place(model.create_state(jax.random.key(0), (64, 64, 1)))
  _, anomaly = scorer(state, images, brain)
  np.testing.assert_array_equal(anomaly[brain], images[brain])
  assert not anomaly[~brain].any()
