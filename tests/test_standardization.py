"""A run's intensity standardisation: fitted once on the training split, kept in the workdir,
and applied the same way to training slices, evaluation volumes and new scans."""

import json

import numpy as np
import pytest

from brainseg_jax import evaluation, standardization
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.datasets import input_pipeline
from brainseg_jax.errors import UserError
from configs import threshold
from tests.datasets import lgg_fixture

pytestmark = pytest.mark.slow  # builds the LGG fixture and evaluates


@pytest.fixture
def lgg(tmp_path, monkeypatch):
  dataset, builder = lgg_fixture.build(tmp_path, monkeypatch)
  config = threshold.get_config()
  config.dataset = dataset
  config.dataset.standardize = "nyul"
  config.eval.write_nifti = False
  config.eval.num_figure_volumes = 0
  return config, builder


def test_training_slices_are_standardised_by_their_whole_subject(lgg):
  config, builder = lgg
  config.dataset.train_slices = "lesion_free"  # no painted-over lesions to compare around
  standard = input_pipeline.fit_standard_scale(builder)
  volumes = input_pipeline.load_volumes(builder, "train", standard)
  slices = np.concatenate([v.image for v in volumes])
  raw = np.concatenate([v.image for v in input_pipeline.load_volumes(builder, "train")])
  assert not np.allclose(slices, raw)
  batch = next(input_pipeline.train_batches(builder, 4, seed=0, dataset_config=config.dataset,
                                            standard=standard))
  for image in batch["image"]:
    assert np.abs(slices - image).max(axis=(1, 2, 3)).min() < 1e-6  # one of the volume's slices


def test_eval_fits_the_scale_once_and_then_reads_it_from_the_workdir(lgg, tmp_path):
  config, _ = lgg
  workdir = tmp_path / "run"
  first = evaluation.evaluate(config, str(workdir))
  assert first["protocol"]["standardize"] == "nyul"
  path = workdir / workdir_lib.STANDARDIZATION_FILE
  record = json.loads(path.read_text())
  assert record["method"] == "nyul" and record["num_scans"] == 1  # the one training patient
  record["scale"] = [0.5 * s for s in record["scale"]]  # another site's scale: halves intensities
  path.write_text(json.dumps(record))
  second = evaluation.evaluate(config, str(workdir))
  np.testing.assert_allclose(second["protocol"]["thresholds"]["fpr_0.01"],
                             0.5 * first["protocol"]["thresholds"]["fpr_0.01"], rtol=1e-3)


def test_a_model_without_its_scale_cannot_score_new_scans(lgg, tmp_path):
  config, _ = lgg
  with pytest.raises(UserError, match="has no standardization.json"):
    standardization.for_run(config, str(tmp_path))
  config.dataset.standardize = "none"
  assert standardization.for_run(config, str(tmp_path)) is None
