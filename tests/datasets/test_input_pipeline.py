import numpy as np
import pytest

from brainseg_jax.datasets import input_pipeline
from brainseg_jax.errors import UserError
from tests.datasets import lgg_fixture


def _slice(lesion_value):
  """A 32x32 brain: tissue 0.4 inside a disc, a 3x3 lesion of `lesion_value` in it."""
  yy, xx = np.mgrid[:32, :32]
  brain = ((yy - 16) ** 2 + (xx - 16) ** 2 < 14 ** 2)[..., None]
  image = np.where(brain, 0.4, 0.0).astype(np.float32)
  lesion = np.zeros_like(brain)
  lesion[10:13, 15:18] = True
  image[lesion] = lesion_value
  return {"image": image, "brain_mask": brain.astype(np.uint8),
          "anomaly_mask": lesion.astype(np.uint8)}


def test_training_images_never_show_an_annotated_lesion():
  example = _slice(lesion_value=1.3)
  image = input_pipeline.healthy_training_image(example)
  lesion = example["anomaly_mask"].astype(bool)
  np.testing.assert_allclose(image[lesion], 0.4)  # painted with the tissue around it
  np.testing.assert_array_equal(image[~lesion], example["image"][~lesion])


def test_healthy_slices_pass_unchanged():
  example = _slice(lesion_value=0.4)
  example["anomaly_mask"][:] = 0
  assert input_pipeline.healthy_training_image(example) is example["image"]


def test_a_training_example_is_the_healthy_image_and_its_brain_mask():
  example = _slice(lesion_value=1.3)
  seen = input_pipeline.training_example(example)
  assert set(seen) == {"image", "brain_mask"}
  np.testing.assert_array_equal(seen["image"], input_pipeline.healthy_training_image(example))
  assert seen["brain_mask"].dtype == bool
  np.testing.assert_array_equal(seen["brain_mask"], example["brain_mask"].astype(bool))


def test_lesion_free_slices_keep_a_margin_around_every_lesion():
  has_lesion = np.zeros(12, bool)
  has_lesion[[4, 5, 10]] = True
  np.testing.assert_array_equal(np.flatnonzero(input_pipeline.lesion_free(has_lesion, 2)),
                                [0, 1])  # 8 is 2 slices from 10
  np.testing.assert_array_equal(np.flatnonzero(input_pipeline.lesion_free(has_lesion, 0)),
                                [0, 1, 2, 3, 6, 7, 8, 9, 11])


def test_lesion_free_protocol_trains_only_on_slices_far_from_lesions(tmp_path, monkeypatch):
  config, builder = lgg_fixture.build(tmp_path, monkeypatch)
  source = builder.as_data_source(split="train")
  config.train_slices, config.lesion_margin_slices = "lesion_free", 2
  positions = input_pipeline.SlicePositions.read(source)
  kept = input_pipeline.training_indices(positions, config)
  lesion_slices = {int(source[i]["slice_index"]) for i in range(len(source))
                   if source[i]["anomaly_mask"].any()}
  assert lesion_slices  # the fixture's train patient has a tumour
  for i in kept:
    k = int(source[i]["slice_index"])
    assert min(abs(k - j) for j in lesion_slices) > 2
    assert not source[i]["anomaly_mask"].any()
  assert 0 < len(kept) < len(source) - len(lesion_slices)
  batch = next(input_pipeline.train_batches(builder, 4, seed=0, dataset_config=config))
  assert batch["image"].shape == (4, 32, 32, 1)
  config.train_slices = "all"
  assert len(input_pipeline.training_indices(positions, config)) == len(source)


def test_a_split_the_build_left_empty_is_a_one_line_error(tmp_path, monkeypatch):
  """The fixture's validation patient lacks T1, so a FLAIR+T1+T1c build has no validation."""
  _, builder = lgg_fixture.build(tmp_path, monkeypatch, modalities=("flair", "t1", "t1c"))
  assert len(input_pipeline.split_source(builder, "train")) > 0
  with pytest.raises(UserError, match="has no 'validation' split .* left out at build time"):
    input_pipeline.split_source(builder, "validation")


def test_context_stack_puts_each_slice_between_its_neighbours():
  volume = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1) * np.ones((1, 2, 2, 1), np.float32)
  stacked = input_pipeline.context_stack(volume, 1)
  assert stacked.shape == (4, 2, 2, 3)
  np.testing.assert_array_equal(stacked[:, 0, 0], [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]])
  assert input_pipeline.context_stack(volume, 0) is volume


def test_a_2_5d_training_slice_is_the_stack_scoring_builds(tmp_path, monkeypatch):
  """Training and scoring must give a model the same neighbours in the same order."""
  config, builder = lgg_fixture.build(tmp_path, monkeypatch)
  config.train_slices, config.lesion_margin_slices, config.context_slices = "lesion_free", 2, 1
  raw = builder.as_data_source(split="train")
  kept = input_pipeline.training_indices(input_pipeline.SlicePositions.read(raw), config)
  examples = input_pipeline.training_slices(builder, "train", config)
  assert len(examples) == len(kept) > 0
  volumes = {v.subject_id: v for v in input_pipeline.load_volumes(builder, "train")}
  for position in (0, len(kept) // 2, len(kept) - 1):
    centre = raw[int(kept[position])]
    volume = volumes[centre["subject_id"].decode()]
    k = int(centre["slice_index"])
    example = examples[position]
    assert example["image"].shape == example["brain_mask"].shape == (32, 32, 3)
    np.testing.assert_array_equal(example["image"],
                                  input_pipeline.context_stack(volume.image, 1)[k])
    np.testing.assert_array_equal(example["brain_mask"],
                                  input_pipeline.context_stack(volume.brain_mask, 1)[k])
  batch = next(input_pipeline.train_batches(builder, 4, seed=0, dataset_config=config))
  assert batch["image"].shape == batch["brain_mask"].shape == (4, 32, 32, 3)


class _CountingSource:
  def __init__(self, source):
    self.source, self.reads = source, 0

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    self.reads += 1
    return self.source[index]


def test_2_5d_lesion_free_training_reads_the_split_once_to_start(tmp_path, monkeypatch):
  """Both the protocol and the neighbours' lookup come from one pass over the split."""
  config, builder = lgg_fixture.build(tmp_path, monkeypatch)
  config.train_slices, config.lesion_margin_slices, config.context_slices = "lesion_free", 2, 1
  source = _CountingSource(builder.as_data_source(split="train"))
  input_pipeline.training_source(source, config)
  assert source.reads == len(source)


def test_pooled_datasets_add_every_split_by_the_same_protocol(tmp_path, monkeypatch):
  config, builder = lgg_fixture.build(tmp_path / "a", monkeypatch)
  other_config, other = lgg_fixture.build(tmp_path / "b", monkeypatch)
  config.train_slices = other_config.train_slices = "lesion_free"
  alone = input_pipeline.training_slices(builder, "train", config)
  pooled = input_pipeline.training_slices(builder, "train", config, pooled=[other])
  every_split = [input_pipeline.training_slices(other, split, config)
                 for split in other.info.splits]
  assert len(pooled) == len(alone) + sum(len(s) for s in every_split)
  np.testing.assert_array_equal(pooled[len(pooled) - 1]["image"],
                                every_split[-1][len(every_split[-1]) - 1]["image"])
  config.lesion_margin_slices = 1000  # no slice is that far from a lesion
  with pytest.raises(UserError, match="dataset lgg: no training slices"):
    input_pipeline.training_slices(other, "train", config)

