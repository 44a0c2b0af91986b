"""orbax_quiet's three filters: each still needed with the installed Orbax, and still exact.

An Orbax (or TensorStore) upgrade can make a filter unnecessary (the leftover is gone) or wrong
(it no longer catches the leftover, or drops something else); either fails here. The leftover a
failed restore prints every time ("Event loop is closed") is checked end to end in fresh
processes. The two that depend on timing (whether reads are still in flight when Orbax gives
up) are made to happen deterministically, from Orbax's own code where it can be called alone.
"""

import asyncio
import gc
import importlib.metadata
import inspect
import logging
import os
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorstore as ts
from orbax.checkpoint._src import asyncio_utils
from orbax.checkpoint._src.serialization import limits, serialization

from brainseg_jax import checkpoints, orbax_quiet
from tests.helpers import PROJECT_ROOT

REMEASURE = ("re-measure the filters of brainseg_jax/orbax_quiet.py with tests/test_orbax_quiet.py "
             "(drop one whose leftover is gone, fix one that no longer matches), then update "
             "orbax_quiet.MEASURED_WITH")


def test_orbax_is_the_release_the_filters_were_measured_with():
  installed = importlib.metadata.version("orbax-checkpoint")
  assert installed == orbax_quiet.MEASURED_WITH, (
      f"orbax-checkpoint {installed} is installed, the quieting was measured with "
      f"{orbax_quiet.MEASURED_WITH}: {REMEASURE}")


_RESTORE_THREE_TIMES = """
import sys
import jax.numpy as jnp
from brainseg_jax import checkpoints, orbax_quiet
from brainseg_jax.errors import UserError
workdir, arrays = sys.argv[1], int(sys.argv[2])
if sys.argv[3] == "quiet":
  orbax_quiet.install()
for _ in range(3):
  checkpointer = checkpoints.Checkpointer(workdir, create=False)
  try:
    checkpointer.restore({f"w{i}": jnp.zeros((64, 64)) for i in range(arrays)})
  except UserError as e:
    print(e, file=sys.stderr)
  checkpointer.close()
"""


def test_a_failed_restore_is_its_error_alone_only_with_the_quieting(tmp_path):
  """TensorStore's reader threads, finishing reads Orbax abandoned, call onto its closed loop.

  With many arrays, on an idle machine every time (3 restores in a process, in case one is
  too quick for it); the CI's parallel suite once missed it in all three.
  """
  arrays = 64
  checkpointer = checkpoints.Checkpointer(str(tmp_path))
  checkpointer.save(1, {f"w{i}": jnp.full((64, 64), float(i)) for i in range(arrays)}, {})
  checkpointer.wait_until_finished()
  checkpointer.close()
  for path in (tmp_path / "checkpoints" / "1" / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:10])  # truncated, as by a full disk

  env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}

  def restored_three_times(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _RESTORE_THREE_TIMES, str(tmp_path), str(arrays), mode],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr

  quiet_err = restored_three_times("quiet")
  # The leftover is a race between the reader threads and the loop's closing: under a loaded
  # machine (the parallel suite) all three restores of a process can miss it, so the loud
  # process may run up to three times before its absence counts.
  for _ in range(3):
    loud_err = restored_three_times("loud")
    if "RuntimeError: Event loop is closed" in loud_err:
      break
  errors = [line for line in loud_err.splitlines() if "checkpoints/1 cannot be restored" in line]
  assert len(errors) == 3, loud_err[-3000:]
  assert "RuntimeError: Event loop is closed" in loud_err, (
      f"a failed restore no longer leaves 'Event loop is closed' tracebacks: "
      f"_quiet_closed_loop_callbacks may be unnecessary; {REMEASURE}\n{loud_err[-2000:]}")
  lines = quiet_err.strip().splitlines()
  assert len(lines) == 3 and all("checkpoints/1 cannot be restored" in line for line in lines), (
      f"with the quieting, a failed restore printed more than its error: {REMEASURE}\n"
      f"{quiet_err[-3000:]}")


@pytest.fixture
def unquieted(monkeypatch):
  """The process as before `install` (put back after the test); unraisable reports collected.

  Returns the list the unraisable reports go to instead of stderr (or pytest's warnings).
  """
  reports = []
  monkeypatch.setattr(sys, "unraisablehook", reports.append)
  monkeypatch.setattr(asyncio.BaseEventLoop, "call_soon_threadsafe",
                      inspect.unwrap(asyncio.BaseEventLoop.call_soon_threadsafe))
  logger = logging.getLogger("asyncio")
  monkeypatch.setattr(logger, "filters", [
      f for f in logger.filters if not getattr(f, "drops_orbax_task_errors", False)])
  return reports


class _NeverDone:
  def __await__(self):
    yield  # a read that is still in flight when the loop it was on closes


def test_orbax_leaves_the_reads_it_abandons_pending_on_its_closed_loop(unquieted):
  """Where all three leftovers come from: when one read of a restore fails, Orbax's run_sync
  closes its event loop without cancelling or awaiting the other reads (asyncio.run would)."""
  abandoned = []

  async def read_forever():
    abandoned.append(asyncio.current_task())
    await asyncio.Event().wait()

  async def fail():
    await asyncio.sleep(0)
    raise ValueError("unreadable")

  async def restore():
    await asyncio.gather(read_forever(), fail())

  with pytest.raises(ValueError, match="unreadable"):
    asyncio_utils.run_sync(restore())
  (task,) = abandoned
  loop = task.get_loop()
  task._log_destroy_pending = False  # asyncio would log its collection; not what is tested here
  assert loop.is_closed() and not task.done(), (
      f"Orbax now settles the reads it abandons before closing its loop: {REMEASURE}")
  # The loop TensorStore's reader threads call back onto gets its call_soon_threadsafe from
  # asyncio.BaseEventLoop, which _quiet_closed_loop_callbacks wraps.
  owner = next(c for c in type(loop).__mro__ if "call_soon_threadsafe" in vars(c))
  assert owner is asyncio.BaseEventLoop, f"{type(loop)} has its own call_soon_threadsafe"


def _abandoned_orbax_read(monkeypatch):
  """Orbax's read of one array index, suspended mid-read, as a failed restore leaves the others."""

  async def read_shard(*args, **kwargs):
    await _NeverDone()

  monkeypatch.setattr(serialization, "_read_shard", read_shard)
  store = ts.open({"driver": "array", "array": np.zeros(4, np.float32),
                   "dtype": "float32"}).result()
  read = serialization._read_array_index_and_device_put(
      jax.devices()[:1], (slice(0, 4, 1),), store, global_shape=(4,), new_shard_shape=(4,),
      dtype=None, byte_limiter=limits.get_byte_limiter(), strict=True, dll=None,
      memory_kind=None)
  read.send(None)
  return read


async def _read_elsewhere():
  """A coroutine that is not Orbax's and fails the same way when it is collected mid-await."""
  try:
    await _NeverDone()
  except BaseException as e:
    raise RuntimeError("closed mid-read") from e


def _collect(coroutine):
  coroutine.send(None)
  del coroutine
  gc.collect()


def test_an_abandoned_orbax_read_reports_an_error_when_collected(unquieted, monkeypatch):
  """Orbax's read wraps every BaseException, the GeneratorExit of its collection included, in an
  error of its own, so each abandoned read prints "Exception ignored in <coroutine>" and a
  TensorStore spec when it is garbage-collected (if it was still in flight: timing)."""
  read = _abandoned_orbax_read(monkeypatch)
  del read
  gc.collect()
  assert len(unquieted) == 1, (
      f"an abandoned Orbax read no longer reports when collected: _silence_orbax_leftovers may "
      f"be unnecessary; {REMEASURE}")
  (report,) = unquieted
  assert report.exc_type is Exception and "Encountered error while reading" in str(
      report.exc_value)
  code = getattr(report.object, "cr_code", None)
  assert code is not None and orbax_quiet._in_orbax(code), (
      f"the report's object is no longer a coroutine of a file under orbax/ "
      f"({report.object!r}): _silence_orbax_leftovers no longer matches it; {REMEASURE}")


def test_only_orbax_coroutines_reports_are_dropped(unquieted, monkeypatch):
  orbax_quiet.install()
  read = _abandoned_orbax_read(monkeypatch)
  del read
  gc.collect()
  assert unquieted == []
  _collect(_read_elsewhere())
  assert [type(r.exc_value) for r in unquieted] == [RuntimeError]
  # A report with no object (as TensorStore makes its own) still gets through.
  unraisable_args = type(unquieted[0])
  sys.unraisablehook(unraisable_args((ValueError, ValueError("x"), None, None, None)))
  assert [type(r.exc_value) for r in unquieted] == [RuntimeError, ValueError]


def _never_retrieved(filename: str, form: str):
  """A task or future failed in code from `filename`, collected without its error retrieved."""
  namespace = {}
  exec(compile("async def read():\n  raise ValueError('unreadable')\n"
               "def read_now():\n  raise ValueError('unreadable')", filename, "exec"), namespace)
  loop = asyncio.new_event_loop()
  if form == "Task":
    failed = loop.create_task(namespace["read"]())
    loop.run_until_complete(asyncio.sleep(0.01))
  else:
    failed = loop.create_future()
    try:
      namespace["read_now"]()
    except ValueError as e:
      failed.set_exception(e)
  loop.close()
  del failed  # asyncio logs "<form> exception was never retrieved" as it is collected
  gc.collect()


@pytest.mark.parametrize("form", ["Task", "Future"])
def test_an_unretrieved_error_of_orbax_is_not_logged_and_others_are(unquieted, caplog, form):
  """When several reads of a broken checkpoint fail at once, Orbax retrieves the first error
  and asyncio logs the others as their tasks are collected (timing: seen under load)."""
  orbax_file = f"{os.sep}site-packages{os.sep}orbax{os.sep}serialization.py"
  message = f"{form} exception was never retrieved"
  with caplog.at_level("ERROR", logger="asyncio"):
    _never_retrieved(orbax_file, form)
    assert message in caplog.text, (
        f"asyncio no longer logs {message!r}: _drop_unretrieved_orbax_task_errors no longer "
        f"matches it; {REMEASURE}")
    caplog.clear()
    orbax_quiet.install()
    _never_retrieved(orbax_file, form)
    assert message not in caplog.text
    _never_retrieved(f"{os.sep}elsewhere{os.sep}reader.py", form)
    assert message in caplog.text


def _tensorstore_failed_future_never_retrieved():
  """An Orbax read's TensorStore future, failed by TensorStore, collected before the read woke."""

  async def start_read():
    awaitable = ts.open({"driver": "zarr", "kvstore": "memory://missing/"}).__await__()
    future = next(awaitable)  # the asyncio future TensorStore fails from its own threads
    await asyncio.wait([future])  # failed; nothing retrieves its error before the loop closes

  loop = asyncio.new_event_loop()
  loop.run_until_complete(start_read())
  loop.close()
  gc.collect()


def test_an_unretrieved_error_tensorstore_set_is_not_logged_and_others_are(unquieted, caplog):
  """The Future form as a failed restore leaves it now and then (timing): the error
  is set from TensorStore's C++, so it has no traceback that passes through Orbax."""
  message = "Future exception was never retrieved"
  with caplog.at_level("ERROR", logger="asyncio"):
    _tensorstore_failed_future_never_retrieved()
    errors = [r.exc_info[1] for r in caplog.records if r.getMessage().startswith(message)]
    assert len(errors) == 1, caplog.text
    assert errors[0].__traceback__ is None and str(errors[0]).startswith(
        orbax_quiet._TENSORSTORE_STATUS), (
            f"TensorStore's errors no longer look as _from_orbax expects ({errors[0]!r}); "
            f"{REMEASURE}")
    caplog.clear()
    orbax_quiet.install()
    _tensorstore_failed_future_never_retrieved()
    assert message not in caplog.text
    loop = asyncio.new_event_loop()
    loop.create_future().set_exception(ValueError("unreadable"))  # not TensorStore's
    loop.close()
    gc.collect()
    assert message in caplog.text


def test_other_asyncio_errors_from_orbax_are_still_logged(unquieted, caplog):
  orbax_quiet.install()
  try:
    exec(compile("raise ValueError('unreadable')",
                 f"{os.sep}site-packages{os.sep}orbax{os.sep}serialization.py", "exec"))
  except ValueError:
    with caplog.at_level("ERROR", logger="asyncio"):
      logging.getLogger("asyncio").error("Task was destroyed but it is pending!", exc_info=True)
  assert "Task was destroyed but it is pending!" in caplog.text


def test_a_closed_loop_drops_a_callback_and_an_open_loop_still_runs_it(unquieted):
  closed = asyncio.new_event_loop()
  closed.close()
  with pytest.raises(RuntimeError, match="Event loop is closed"):
    closed.call_soon_threadsafe(print)  # what TensorStore's reader threads run into
  orbax_quiet.install()
  assert closed.call_soon_threadsafe(print) is None

  loop = asyncio.new_event_loop()
  ran = []
  other_thread = threading.Thread(target=loop.call_soon_threadsafe, args=(ran.append, "thread"))
  other_thread.start()
  other_thread.join()
  handle = loop.call_soon_threadsafe(ran.append, "main")
  assert isinstance(handle, asyncio.Handle)
  loop.run_until_complete(asyncio.sleep(0))
  loop.close()
  assert ran == ["thread", "main"]


def test_install_is_idempotent(unquieted):
  original = asyncio.BaseEventLoop.call_soon_threadsafe
  previous_hook = sys.unraisablehook
  orbax_quiet.install()
  installed = (sys.unraisablehook, asyncio.BaseEventLoop.call_soon_threadsafe,
               list(logging.getLogger("asyncio").filters))
  orbax_quiet.install()
  assert (sys.unraisablehook, asyncio.BaseEventLoop.call_soon_threadsafe,
          list(logging.getLogger("asyncio").filters)) == installed
  assert sys.unraisablehook is not previous_hook
  assert asyncio.BaseEventLoop.call_soon_threadsafe.__wrapped__ is original
  assert sum(getattr(f, "drops_orbax_task_errors", False)
             for f in logging.getLogger("asyncio").filters) == 1
