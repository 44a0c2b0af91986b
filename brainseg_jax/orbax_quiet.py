"""Quiets what Orbax leaves behind when a checkpoint cannot be restored.

A broken checkpoint's restore fails with one error, which the caller turns
into one line. Orbax and TensorStore then report the reads they abandoned,
each with a full TensorStore spec, in three more ways that reach the user's
terminal: "Exception ignored in <coroutine>" as each abandoned coroutine is
garbage-collected, asyncio's "Task/Future exception was never retrieved" log
records, and "Event loop is closed" tracebacks printed from TensorStore's C++
reader threads. `install` drops exactly those three, for Orbax's own reads only,
once per process; the command-line runner (cli.run) calls it.

tests/test_orbax_quiet.py checks that each of them is still what Orbax does
(so an Orbax upgrade that changes it fails there) and that nothing else is dropped.
"""

import asyncio
import functools
import logging
import os
import sys

# The orbax-checkpoint release whose leftovers these filters were measured against. An upgrade
# fails tests/test_orbax_quiet.py until the filters are re-measured there and this is updated.
MEASURED_WITH = "0.12.8"


def install() -> None:
  """Installs the three filters (idempotent)."""
  _silence_orbax_leftovers()
  _quiet_closed_loop_callbacks()
  _drop_unretrieved_orbax_task_errors()


def _silence_orbax_leftovers():
  """Drops the "Exception ignored in <coroutine>" reports of a failed Orbax restore.

  When one array of a checkpoint cannot be read, Orbax abandons the reads of the
  others; each abandoned coroutine reports its own error with a full TensorStore
  spec (thousands of lines) as it is garbage-collected: Orbax's read turns every
  BaseException, the GeneratorExit of its collection included, into an error of
  its own (timing: only reads still in flight when Orbax closes its loop). The one
  line that names the broken checkpoint says all of it.
  """
  previous = sys.unraisablehook
  if getattr(previous, "drops_orbax_leftovers", False):
    return

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and _in_orbax(code):
      return
    previous(unraisable)

  hook.drops_orbax_leftovers = True
  sys.unraisablehook = hook


def _in_orbax(code) -> bool:
  return f"{os.sep}orbax{os.sep}" in code.co_filename


# The status codes TensorStore's error messages start with ("OUT_OF_RANGE: Error opening ...").
_TENSORSTORE_STATUS = tuple(f"{code}: " for code in (
    "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"))


def _from_orbax(error: BaseException | None) -> bool:
  """Raised in Orbax's code, or set by TensorStore on the future of a read Orbax awaited.

  TensorStore fails such a future from C++: its error was never raised in Python, so it
  has no traceback to tell whose it is, only TensorStore's own form of message.
  """
  if error is None:
    return False
  if error.__traceback__ is None:
    return str(error).startswith(_TENSORSTORE_STATUS)
  traceback = error.__traceback__
  while traceback is not None:
    if _in_orbax(traceback.tb_frame.f_code):
      return True
    traceback = traceback.tb_next
  return False


_NEVER_RETRIEVED = ("Task exception was never retrieved", "Future exception was never retrieved")


class _UnretrievedOrbaxTaskErrors(logging.Filter):
  """Drops asyncio's "Task/Future exception was never retrieved" for Orbax's abandoned reads."""

  drops_orbax_task_errors = True

  def filter(self, record):
    error = record.exc_info[1] if record.exc_info else None
    return not (record.getMessage().startswith(_NEVER_RETRIEVED) and _from_orbax(error))


def _drop_unretrieved_orbax_task_errors():
  """The asyncio form of `_silence_orbax_leftovers`: when several reads of a broken
  checkpoint fail at once, Orbax retrieves the first error and asyncio logs each
  other one, with its traceback and TensorStore spec, when its task or TensorStore's
  future is collected (timing: only errors that arrive just before Orbax closes its loop).
  """
  logger = logging.getLogger("asyncio")
  if not any(getattr(f, "drops_orbax_task_errors", False) for f in logger.filters):
    logger.addFilter(_UnretrievedOrbaxTaskErrors())


def _quiet_closed_loop_callbacks():
  """Lets a callback scheduled onto a closed event loop be dropped instead of raising.

  When a restore fails, Orbax closes its event loop while TensorStore's reader
  threads are still finishing the reads it abandoned; each one then calls
  `loop.call_soon_threadsafe`, which raises "Event loop is closed", and
  TensorStore reports that traceback from C++, dozens of times, through
  sys.unraisablehook with no object that would say whose it is, so it is stopped
  here instead. A closed loop never runs a callback anyway, so the callback is
  dropped without a word; open loops are untouched.
  """
  loop_class = asyncio.BaseEventLoop
  if getattr(loop_class.call_soon_threadsafe, "drops_when_closed", False):
    return
  original = loop_class.call_soon_threadsafe

  @functools.wraps(original)
  def call_soon_threadsafe(self, *args, **kwargs):
    if self.is_closed():
      return None
    return original(self, *args, **kwargs)

  call_soon_threadsafe.drops_when_closed = True
  loop_class.call_soon_threadsafe = call_soon_threadsafe
