"""`pip install .` into a fresh venv: the packages, the console commands, their help and logs.

The venv sees this environment's installed dependencies (a .pth file) rather
than downloading them again; the project itself comes only from the install,
run from a folder outside the checkout.
"""

import os
import shutil
import site
import subprocess
import sys

import pytest

from tests.helpers import PROJECT_ROOT, finds_the_lesion

# A flag each command's --help must list.
COMMANDS = {"brainseg-train": "--config", "brainseg-eval": "--workdir",
            "brainseg-predict": "--input", "brainseg-calibrate": "--healthy",
            "brainseg-compare": "--configs", "brainseg-build": "--dataset",
            "brainseg-sample": "--output_dir", "brainseg-export": "--name"}
# The missing-flag line is cli.require_flags's, the same for each: two commands show it.
REQUIRED = {"brainseg-train", "brainseg-predict"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(venv bin folder, a folder to run in, environment) of a fresh install of the project."""
  root = tmp_path_factory.mktemp("install")
  source = root / "source"
  shutil.copytree(PROJECT_ROOT, source, ignore=shutil.ignore_patterns(
      ".git", ".venv", "runs", "data", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info",
      "build", "docs", "tests", "bench"))
  # Without pip (and its bundled setuptools): this environment's pip installs into it.
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
  bin_dir = root / "venv" / "bin"
  venv_site = subprocess.run(
      [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
      check=True, capture_output=True, text=True).stdout.strip()
  with open(os.path.join(venv_site, "dependencies.pth"), "w") as f:
    f.write("\n".join(site.getsitepackages()) + "\n")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  subprocess.run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install",
                  "--quiet", "--no-deps", "--no-build-isolation", str(source)],
                 check=True, env=env, cwd=root)
  shutil.rmtree(source)  # nothing may come from the copy: only from the install
  outside = root / "elsewhere"
  outside.mkdir()
  return bin_dir, outside, env


def _run(installed, *args, check=True):
  bin_dir, outside, env = installed
  result = subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=outside, env=env,
                          capture_output=True, text=True, timeout=600)
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_the_packages_come_from_the_install(installed):
  found = _run(installed, "python", "-c",
               "import brainseg_jax, data_prep, configs; "
               "print(brainseg_jax.__file__, data_prep.__file__, configs.__file__)").stdout
  assert str(PROJECT_ROOT) not in found and found.count("site-packages") == 3, found


@pytest.mark.slow
@pytest.mark.parametrize("command, flag", sorted(COMMANDS.items()))
def test_each_command_lists_its_flags_and_needs_them_in_one_line(installed, command, flag):
  help_text = _run(installed, command, "--help", check=False).stdout  # absl's --help exits 1
  assert f"  {flag}" in help_text, help_text
  if command not in REQUIRED:
    return
  missing = _run(installed, command, check=False)
  assert missing.returncode == 1
  assert missing.stderr.strip().splitlines() == [missing.stderr.strip()], missing.stderr
  assert missing.stderr.startswith("error: ") and "is required" in missing.stderr


@pytest.mark.slow
def test_an_installed_command_trains_evaluates_and_logs_as_a_checkout(installed, data_dir):
  configs = _run(installed, "python", "-c",
                 "import configs, os; print(os.path.dirname(configs.__file__))").stdout.strip()
  workdir = installed[1] / "run"
  result = _run(installed, "brainseg-train", f"--config={configs}/threshold.py:smoke",
                f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}")
  assert (workdir / "metrics.json").is_file()
  # The project's own INFO lines (the evaluation summary) are kept in an installed copy.
  assert "Dice" in result.stderr and "wrote metrics" in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_a_shipped_unet_maps_a_dicom_series_right_after_install(installed, tmp_path):
  """The README's third set-up command: no training, no download."""
  from brainseg_jax import pretrained

  unet = next(n for n in pretrained.names() if pretrained.card(n)["family"] == "unet_dae")
  bin_dir, outside, env = installed
  env = {**env, "BRAINSEG_HOME": str(tmp_path / "home")}
  installed = (bin_dir, outside, env)
  _run(installed, "brainseg-sample", f"--output_dir={tmp_path / 'sample'}")
  _run(installed, "brainseg-predict", f"--model={unet}", f"--input={tmp_path / 'sample' / 'dicom'}",
       f"--output_dir={tmp_path / 'maps'}")
  assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(
      [f"AX_FLAIR_sample_{k}" for k in ("anomaly_map.nii.gz", "prediction.nii.gz",
                                        "brain_mask.nii.gz", "reconstruction.nii.gz",
                                        "overlay.png", "report.json")] + ["summary.csv"])
  finds_the_lesion(tmp_path / "maps" / "AX_FLAIR_sample_prediction.nii.gz",
                   tmp_path / "sample" / "sample_lesion.nii.gz")
