"""Shared fixtures. Several XLA CPU devices must be requested before JAX starts."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  # One compilation cache for the session, its xdist workers and every command it runs: the
  # smoke trainings, predict and eval commands compile the same programs again in each new
  # process (a VAE smoke run: 17.2 s, 10.7 s with the cache warm). JAX keys each entry on the
  # program, the devices, the XLA flags and the versions, so a hit is the executable that
  # process would have compiled.
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="brainseg_jax_tests_xla_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

from brainseg_jax import parallel  # noqa: E402

parallel.single_threaded_device_kernels()

import functools  # noqa: E402
import hashlib  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from tests.helpers import PROJECT_ROOT, run  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """One TFDS data dir for the whole session: each dataset variant is built once."""
  return str(os.environ.get("BRAINSEG_TEST_DATA_DIR") or tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session", autouse=True)
def registrations_memo():
  """Each scan is registered once per session and in this process, however many tests need it.

  Registering a 1 mm scan takes 8-10 s and a dozen test modules preprocess the
  same few sample scans. The memo's key is the moving image itself (its voxels
  and geometry) and every other argument, so a changed preprocessing or
  registration setting still registers anew; one thread makes the registration
  bit-reproducible, which the tests using `fresh_registration` check without the memo.
  Subprocesses (the command-line tests) and spawned build workers do not share it.
  """
  import SimpleITK as sitk

  from data_prep import register

  real = register.register_affine
  results = {}

  @functools.wraps(real)
  def memoised(moving, *args, **kwargs):
    voxels = sitk.GetArrayViewFromImage(moving)
    key = (hashlib.sha1(voxels.tobytes()).hexdigest(), voxels.dtype.str, voxels.shape,
           moving.GetOrigin(), moving.GetSpacing(), moving.GetDirection(), args,
           tuple(sorted(kwargs.items())))
    if key not in results:
      results[key] = real(moving, *args, **kwargs)
    return results[key].copy()

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(register, "register_affine", memoised)
    yield


@pytest.fixture
def fresh_registration(monkeypatch):
  """The test's own registrations run the registration itself, not the session memo."""
  from data_prep import register

  monkeypatch.setattr(register, "register_affine", register.register_affine.__wrapped__)


@pytest.fixture(scope="session")
def sample_data_dir() -> pathlib.Path:
  """The real sample scans beside the project (../shared/data), or skip."""
  default = PROJECT_ROOT.parent / "shared" / "data"
  path = pathlib.Path(os.environ.get("BRAINSEG_SAMPLE_DATA", default))
  if not path.is_dir():
    pytest.skip(f"real sample data not found at {path} (set BRAINSEG_SAMPLE_DATA)")
  return path


@pytest.fixture(scope="session")
def vae_smoke_run(tmp_path_factory, data_dir):
  """`launch.py --config=configs/vae.py:smoke` once per session: (workdir, result, seconds)."""
  workdir = tmp_path_factory.mktemp("vae_smoke")
  start = time.time()
  result = run(["launch.py", "--config=configs/vae.py:smoke", f"--workdir={workdir}"], data_dir)
  return workdir, result, time.time() - start
