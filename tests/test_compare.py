import json

import matplotlib.pyplot as plt
import pytest

from tests.helpers import run

pytestmark = pytest.mark.slow  # trains and evaluates several configs


def test_compare_trains_evaluates_and_tabulates_what_eval_measured(tmp_path, data_dir):
  output = tmp_path / "results.md"
  run(["-m", "brainseg_jax.compare", "--configs=threshold:smoke,ae:smoke",
       f"--override=dataset.data_dir={data_dir}", "--override=ae:num_train_steps=10",
       "--override=ae:warmup_steps=2", f"--workdir_root={tmp_path / 'runs'}",
       f"--output={output}"], data_dir=None)
  table = output.read_text()
  assert "Made by `python -m brainseg_jax.compare" in table
  for name in ("threshold_smoke", "ae_smoke"):
    metrics = json.loads((tmp_path / "runs" / name / "metrics.json").read_text())
    dice = metrics["pooled"]["all"]["dice"]
    auroc = metrics["pooled"]["all"]["auroc"]
    row = next(line for line in table.splitlines()
               if line.startswith(f"| {name.replace('_', ':')} | all"))
    assert f"| {dice:.3f} |" in row and f"| {auroc:.3f} |" in row, row
  # The per-config override reached the AE only; its training time is recorded.
  train_time = json.loads((tmp_path / "runs" / "ae_smoke" / "train_time.json").read_text())
  assert train_time["step"] == 10 and train_time["seconds"] > 0
  assert not (tmp_path / "runs" / "threshold_smoke" / "train_time.json").exists()
  # The per-volume Dice box plot and the every-model figure, linked from the table.
  for png in ("results_dice_per_volume.png", "results_volumes.png"):
    assert f"]({png})" in table
    image = plt.imread(tmp_path / png)
    assert image.ndim == 3 and image[..., :3].std() > 0.05  # drawn, not blank


def test_compare_rejects_an_unknown_override_key(tmp_path):
  result = run(["-m", "brainseg_jax.compare", "--configs=threshold:smoke",
                "--override=model.no_such_key=1", f"--workdir_root={tmp_path}",
                f"--output={tmp_path / 'r.md'}"], data_dir=None, check=False)
  assert result.returncode == 1
  assert "no key 'model.no_such_key'" in result.stderr.strip().splitlines()[-1]
