"""The small-lesion table and its one-line outcome are made from the runs' metrics.json alone."""

import json

from bench import small_lesions


def _metrics(dice, auprc, volumes=3):
  rates = {"dice": dice, "sensitivity": 0.5, "precision": 0.5, "accuracy": 0.99}
  pooled = {**rates, "auroc": 0.9, "auprc": auprc, "best_dice_upper_bound": dice + 0.1,
            "lesion_sensitivity": 0.75, "false_positive_components": 6, "num_volumes": volumes,
            "adaptive_fpr_0.01": {**rates, "dice": dice - 0.01}}
  return {"protocol": {"healthy_fprs": [0.01]}, "pooled": {"all": pooled}}


def _write(root, name, test_set, dice, auprc):
  folder = root / name / test_set
  folder.mkdir(parents=True)
  (folder / "metrics.json").write_text(json.dumps(_metrics(dice, auprc)))


def test_the_outcome_line_compares_the_best_learned_model_with_thresholding(tmp_path):
  _write(tmp_path, "threshold_64", "elderly", 0.6731, 0.64)
  _write(tmp_path, "unet_64", "elderly", 0.4621, 0.569)
  _write(tmp_path, "unet_64_aug", "elderly", 0.55, 0.60)
  _write(tmp_path, "unet_64", "lgg", 0.562, 0.576)
  tables, rows = small_lesions.table(str(tmp_path), list(small_lesions.MODELS))
  line = small_lesions.outcome(rows)
  assert line == ("elderly FLAIR WMH: best learned unet_64_aug Dice **0.550** AUPRC **0.600**; "
                  "threshold Dice **0.673** AUPRC **0.640**")
  assert "| `unet_64` | 3 | 0.462 | 0.452 | n/a | 0.562 | 0.900 | 0.569 | 0.75 | 2.0 |" in tables
  assert "threshold_128" not in tables  # not run: no row


def test_without_a_baseline_nothing_is_claimed(tmp_path):
  _write(tmp_path, "unet_64", "elderly", 0.4, 0.5)
  _, rows = small_lesions.table(str(tmp_path), ["unet_64"])
  assert small_lesions.outcome(rows) == "elderly FLAIR WMH: not measured"


def test_the_threshold_row_of_the_same_post_processing_is_the_reference(tmp_path):
  _write(tmp_path, "threshold_64", "elderly", 0.6, 0.6)
  _write(tmp_path, "threshold_64_erosion2", "elderly", 0.7, 0.7)
  _write(tmp_path, "unet_64_erosion2", "elderly", 0.65, 0.65)
  _, rows = small_lesions.table(str(tmp_path), list(small_lesions.MODELS))
  assert small_lesions.outcome(rows).endswith("threshold Dice **0.700** AUPRC **0.700**")


def test_a_pooled_model_is_never_tested_on_a_source_it_trained_on(tmp_path):
  """Leave one dataset out: LGG + TCGA is scored on the elderly scans and LGG test only."""
  steps = small_lesions.commands("unet_64_pool_tcga", "R", "LGG", "SHARED")
  assert [workdir for workdir, _ in steps] == ["R/unet_64_pool_tcga/lgg",
                                              "R/unet_64_pool_tcga/elderly"]
  assert '--config.dataset.pool=("brats_glioma=SHARED/tcga_glioma",)' in steps[0][1]
  _write(tmp_path, "unet_64_pool_tcga", "elderly", 0.5, 0.6)
  tables, _ = small_lesions.table(str(tmp_path), ["unet_64_pool_tcga"])
  assert "(`unet_64_pool_tcga`) | 0.500 / 0.600 | trained on | - |" in tables


def test_the_lgg_held_out_leg_trains_on_the_others_and_scores_lgg_test(tmp_path):
  (workdir, argv), = small_lesions.commands("unet_64_pool_nolgg", "R", "LGG", "SHARED")
  assert workdir == "R/unet_64_pool_nolgg/lgg"
  assert [a for a in argv if "manual_dir" in a] == [
      "--config.dataset.manual_dir=SHARED/elderly_flair", "--config.eval.test_manual_dir=LGG"]
  _write(tmp_path, "unet_64_pool_nolgg", "lgg", 0.3, 0.4)
  tables, _ = small_lesions.table(str(tmp_path), ["unet_64_pool_nolgg"])
  assert "| trained on | trained on | 0.300 / 0.400 | n/a (elderly validation) |" in tables
