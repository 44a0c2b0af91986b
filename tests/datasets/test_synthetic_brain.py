import numpy as np
import pytest

from brainseg_jax import config as config_lib
from brainseg_jax.datasets import input_pipeline, synthetic_brain


@pytest.fixture(scope="module")
def builder(data_dir):
  config = config_lib.defaults().dataset
  config.resolution = 32
  config.data_dir = data_dir
  return input_pipeline.get_builder(config)


def test_splits_hold_disjoint_subjects_and_anomalies_only_in_test(builder):
  subjects = {}
  for split in ("train", "validation", "test"):
    volumes = input_pipeline.load_volumes(builder, split)
    assert len(volumes) == synthetic_brain.SPLIT_SIZES[split]
    subjects[split] = {v.subject_id for v in volumes}
    for v in volumes:
      assert v.image.shape == (24, 32, 32, 1) and v.image.dtype == np.float32
      assert not np.any(v.anomaly_mask & ~v.brain_mask)
      if split == "test":
        assert v.anomaly_type in ("ms", "glioma") and v.anomaly_mask.any()
        # the test volume's healthy slices are there too
        assert (~v.anomaly_mask.any(axis=(1, 2, 3))).any()
      else:
        assert v.anomaly_type == "none" and not v.anomaly_mask.any()
  assert not subjects["train"] & subjects["validation"]
  assert not subjects["train"] & subjects["test"]
  assert not subjects["validation"] & subjects["test"]
  types = [synthetic_brain.subject_plan("test", 0)[i][2] for i in range(10)]
  assert types.count("ms") == 5 and types.count("glioma") == 5


def test_subject_seeds_are_unique_across_splits():
  seeds = [s for split in synthetic_brain.SPLIT_SIZES for _, s, _ in
           synthetic_brain.subject_plan(split, 0)]
  assert len(seeds) == len(set(seeds))


def test_stored_dataset_equals_a_fresh_generation(builder):
  """Determinism: regenerating from the seed reproduces the stored slices bit for bit."""
  stored = input_pipeline.load_volumes(builder, "validation")[0]
  regenerated = {key: example for key, example in builder._generate_examples("validation")
                 if key.startswith(stored.subject_id + "/")}
  assert len(regenerated) == stored.image.shape[0]
  for k in range(stored.image.shape[0]):
    example = regenerated[f"{stored.subject_id}/{k:03d}"]
    np.testing.assert_array_equal(example["image"], stored.image[k])
    np.testing.assert_array_equal(example["brain_mask"].astype(bool), stored.brain_mask[k])


def test_train_batches_resume_at_the_same_batch(builder):
  full = input_pipeline.train_batches(builder, batch_size=4, seed=0)
  batches = [next(full) for _ in range(5)]
  resumed = input_pipeline.train_batches(builder, batch_size=4, seed=0, start_step=3)
  resumed_batch = next(resumed)
  for key, value in batches[3].items():
    np.testing.assert_array_equal(resumed_batch[key], value)
  assert set(batches[0]) == {"image", "brain_mask"}
  assert batches[0]["image"].shape == batches[0]["brain_mask"].shape == (4, 32, 32, 1)
  assert batches[0]["image"].dtype == np.float32 and batches[0]["brain_mask"].dtype == bool
  # The mask is the slice's: no image intensity outside it.
  assert not batches[0]["image"][~batches[0]["brain_mask"]].any()
  assert not np.array_equal(batches[0]["image"], batches[1]["image"])


def test_unknown_dataset_and_variant_are_clear_errors(data_dir):
  from brainseg_jax.errors import UserError
  config = config_lib.defaults().dataset
  config.data_dir = data_dir
  config.name = "brats"
  with pytest.raises(UserError, match="unknown dataset.name 'brats'"):
    input_pipeline.get_builder(config)
  config.name, config.resolution = "synthetic_brain", 100
  with pytest.raises(UserError, match="no variant 'flair_100'"):
    input_pipeline.get_builder(config)
