"""Shared fixtures. Several XLA CPU devices must be requested before JAX starts."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import pathlib  # noqa: E402

import pytest  # noqa: E402

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """One TFDS data dir for the whole session: each dataset variant is built once."""
  return str(os.environ.get("BRAINSEG_TEST_DATA_DIR") or tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def sample_data_dir() -> pathlib.Path:
  """The real sample scans beside the project (../shared/data), or skip."""
  default = PROJECT_ROOT.parent / "shared" / "data"
  path = pathlib.Path(os.environ.get("BRAINSEG_SAMPLE_DATA", default))
  if not path.is_dir():
    pytest.skip(f"real sample data not found at {path} (set BRAINSEG_SAMPLE_DATA)")
  return path
