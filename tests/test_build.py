"""`brainseg_jax.build`: parallel and sharded builds write what one process writes.

The fixture is the tiny Kaggle LGG layout (tests/datasets/lgg_fixture.py: six patients of tif
slices) with real resampling and N4 in the worker processes but no registration (the
ellipsoid heads have no anatomy to register, and one-thread registration is checked to be
bit-reproducible in tests/data_prep/test_real_scans.py).
"""

import dataclasses
import os
import pathlib

import numpy as np
import pytest

from brainseg_jax import build
from brainseg_jax.datasets import lgg
from brainseg_jax.errors import UserError
from data_prep.shard import Shard
from tests.datasets.lgg_fixture import write_patient

pytestmark = pytest.mark.slow  # builds the LGG fixture three times

_PREP = {"brain_mask": "template", "resample": True, "n4": True, "registration": "none"}
_PATIENTS = [f"TCGA_AA_{i:04d}" for i in range(1, 7)]


@pytest.fixture(scope="module")
def kaggle_dir(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("kaggle") / "kaggle_3m"
  for patient in _PATIENTS:
    write_patient(root, patient)
  return root


@pytest.fixture(autouse=True)
def cheap_prep(monkeypatch):
  monkeypatch.setattr(lgg.Lgg, "PREP_OVERRIDES", _PREP)


def _examples(builder) -> dict[str, list[dict[str, bytes]]]:
  """split -> every example's features as bytes, in the dataset's stored order.

  `source_file` names the restacked NIfTI under the build's own data dir: compared
  relative to it.
  """
  root = builder.prep_work_dir().split("prep_cache")[0].encode()
  out = {}
  for split in sorted(builder.info.splits):
    source = builder.as_data_source(split=split)
    out[split] = [{k: np.asarray(v).tobytes().replace(root, b"<data_dir>/")
                   for k, v in source[i].items()} for i in range(len(source))]
  return out


def _build(kaggle_dir, data_dir, workers):
  builder, _ = build.build("lgg", str(kaggle_dir), "flair", 32, str(data_dir), workers=workers,
                           sheet_subjects=0)
  return builder


@pytest.fixture(scope="module")
def one_process(kaggle_dir, tmp_path_factory):
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(lgg.Lgg, "PREP_OVERRIDES", _PREP)
    return _build(kaggle_dir, tmp_path_factory.mktemp("one"), workers=1)


def test_every_core_writes_the_same_dataset_as_one_process(one_process, kaggle_dir, tmp_path,
                                                          monkeypatch):
  monkeypatch.delenv("BRAINSEG_PREP_WORKERS", raising=False)
  parallel = _build(kaggle_dir, tmp_path, workers=2)
  assert sum(len(v) for v in _examples(one_process).values()) == 6 * 24
  assert _examples(parallel) == _examples(one_process)


def test_two_shards_then_the_final_build_give_the_one_process_dataset(one_process, kaggle_dir,
                                                                     tmp_path):
  done = []
  for shard in ("0/2", "1/2"):
    builder, summary = build.preprocess_shard("lgg", str(kaggle_dir), "flair", 32, str(tmp_path),
                                              shard, workers=2)
    assert not builder.is_prepared()  # a shard writes the cache only
    assert summary.done and not summary.skipped
    done.append(set(summary.done))
  assert not done[0] & done[1]
  assert {s.split("_2000")[0] for s in done[0] | done[1]} == set(_PATIENTS)
  cached = sorted(os.listdir(builder.prep_work_dir()))
  assert len(cached) == len(_PATIENTS)
  final = _build(kaggle_dir, tmp_path, workers=1)
  assert final.prep_summary.cached == len(_PATIENTS)  # nothing preprocessed again
  assert _examples(final) == _examples(one_process)


def test_a_shard_takes_its_subjects_by_id_alone():
  ids = [f"subject{i:03d}" for i in range(200)]
  parts = [{s for s in ids if Shard(i, 3).holds(s)} for i in range(3)]
  assert set().union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)
  assert all(40 < len(p) < 90 for p in parts)
  assert {s for s in ids[:50] if Shard(1, 3).holds(s)} == parts[1] & set(ids[:50])


@pytest.mark.parametrize("text", ["2/2", "1", "-1/2", "a/b", "0/0"])
def test_a_bad_shard_is_refused_with_the_expected_form(text, kaggle_dir, tmp_path):
  with pytest.raises(UserError, match=r"--shard=.*expected i/n with 0 <= i < n"):
    build.preprocess_shard("lgg", str(kaggle_dir), "flair", 32, str(tmp_path), text)


def test_shard_parse():
  assert Shard.parse(" 1/4 ") == Shard(1, 4) and str(Shard(1, 4)) == "1/4"
  assert dataclasses.astuple(Shard.parse("0/1")) == (0, 1)
