"""The one runner every command-line entry point uses.

An entry module (launch, eval, predict, compare, calibrate, build) defines
its own flags in its `main()`, with the helpers below for the flags several
of them share, and hands its work to `run`. `run` checks the command
line, splits a CPU host into devices, joins a multi-process run, keeps other
libraries' INFO logs out of the way, and ends every command in one line:

  exit 1    an error the user can fix (a config key, a file, a full disk), named
  exit 2    an error nobody foresaw: a bug; the traceback goes to a log file it names
  exit 130  Ctrl-C (SIGINT), 143 SIGTERM: one line, and nothing further is written

Orbax's leftover reports of a failed restore are quieted (orbax_quiet.py).
Importing this module defines no flags.
"""

import datetime
import errno
import logging as python_logging
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from brainseg_jax import orbax_quiet, parallel
from brainseg_jax.errors import USER_ERRORS, UserError, plain

FLAGS = flags.FLAGS


def define_config_flags() -> None:
  """--config (an experiment file with overrides) and --workdir."""
  config_flags.DEFINE_config_file(
      "config", None, "Experiment config file, e.g. configs/vae.py or configs/vae.py:smoke; "
      "override keys with --config.key=value.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, metrics and figures.")


def define_device_flags(distributed: bool = False) -> None:
  """--cpu_devices, and with `distributed` the flags that join a multi-process run."""
  flags.DEFINE_integer("cpu_devices", None, "On a CPU-only host, the number of XLA devices to "
                       "split it into (data parallel); default: two per core, a power of two, "
                       "at most 8 (parallel.devices_for_cores).")
  if distributed:
    flags.DEFINE_bool("distributed", False, "Multi-process run: call jax.distributed.initialize, "
                      "from the flags below or, where they are unset, from the cluster "
                      "environment (SLURM, TPU pods, ...), as JAX detects it.")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
    flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")


def require_flags(*names: str) -> None:
  for name in names:
    if FLAGS[name].value in (None, ""):
      raise UserError(f"--{name} is required (--help lists the flags)")


def experiment(default_workdir: Callable | None = None) -> tuple[ml_collections.ConfigDict, str]:
  """(config, workdir) from --config and --workdir (or `default_workdir(config)`)."""
  if FLAGS.config is None:
    raise UserError("--config is required, e.g. --config=configs/vae.py (--help lists the flags)")
  try:
    FLAGS.config.keys()  # config_flags defers errors in the config file to first use
  except OSError as e:
    raise UserError(f"cannot load --config: {e}") from e
  workdir = FLAGS.workdir or (default_workdir(FLAGS.config) if default_workdir else None)
  if workdir is None:
    raise UserError("--workdir is required (--help lists the flags)")
  return FLAGS.config, workdir


class ProjectInfoOnly(python_logging.Filter):
  """Keeps INFO lines from this project; other libraries (Orbax, TFDS) only warn and above.

  The project is its packages' folders, wherever they are installed (a
  checkout, or site-packages beside the other libraries).
  """

  _PACKAGES = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 name) + os.sep
                    for name in ("brainseg_jax", "data_prep", "configs"))

  def filter(self, record):
    return record.levelno >= python_logging.WARNING or record.pathname.startswith(self._PACKAGES)


# Errors of the machine that the user fixes (space, permissions), not bugs.
_USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                   errno.EMFILE, errno.ENAMETOOLONG}


class Terminated(KeyboardInterrupt):
  """SIGTERM, raised like Ctrl-C so that every `finally` (temporary files) runs."""


def _raise_terminated(signum, frame):
  raise Terminated()


def run(command: Callable[[], object]) -> None:
  """Runs `command()` under absl; every way it can end is one line (see the module doc)."""

  def main(argv):
    if len(argv) > 1:
      exit_with(f"unexpected arguments: {' '.join(argv[1:])} (--help lists the flags)")
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
      if "cpu_devices" in FLAGS:
        if FLAGS.cpu_devices is not None and FLAGS.cpu_devices < 1:
          raise UserError(f"--cpu_devices={FLAGS.cpu_devices}: expected at least 1")
        parallel.split_host_into_devices(FLAGS.cpu_devices)
      if "distributed" in FLAGS and (FLAGS.distributed or FLAGS.coordinator_address):
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
      python_logging.getLogger().setLevel(python_logging.INFO)
      logging.get_absl_handler().addFilter(ProjectInfoOnly())
      orbax_quiet.install()
      command()
    except USER_ERRORS as e:
      exit_with(str(e))
    except Terminated:
      stop_now("terminated (SIGTERM): stopped; nothing further was written", status=143)
    except KeyboardInterrupt:
      stop_now("interrupted (Ctrl-C): stopped; nothing further was written", status=130)
    except MemoryError:
      exit_with("out of memory: the input or the config needs more than this machine has "
                "(a smaller batch_size, fewer --cpu_devices, or a resampled scan)")
    except OSError as e:
      if e.errno not in _USER_OS_ERRORS:
        exit_with_bug(e)
      exit_with(f"cannot write {e.filename or 'a file'}: {e.strerror or e}" if e.filename
                else f"{e.strerror or e}")
    except Exception as e:  # noqa: BLE001  (the last resort: a bug, said as one)
      exit_with_bug(e)

  _list_own_flags_in_help()
  app.run(main, flags_parser=_parse_flags)


def exit_with_bug(error: BaseException):
  """One line saying it is a bug and where its traceback went; exit status 2."""
  log = _bug_log_path()
  try:
    with open(log, "w") as f:
      f.write(f"{' '.join(sys.argv)}\n\n")
      traceback.print_exception(error, file=f)
    where = f"the traceback is in {log}"
  except OSError:
    where = "the traceback could not be saved"
  first = (str(error).strip().splitlines() or [""])[0][:300]
  exit_with(f"internal error, a bug in brainseg_jax ({type(error).__name__}: {first}); "
            f"{where}; please report it with that file", status=2)


def _bug_log_path() -> str:
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return os.path.join(tempfile.gettempdir(), f"brainseg_jax-error-{stamp}-{os.getpid()}.log")


def _list_own_flags_in_help() -> None:
  """Makes --help list the command's flags, also those defined here for several commands.

  absl's --help lists the key flags of the module it ran (`sys.argv[0]`): the
  flags that module defined itself. A command's flags are defined by its
  package module (or here), so each is declared a key flag of what ran.
  """
  ours = ("brainseg_jax", "data_prep", "configs", "__main__", sys.argv[0])
  for module, module_flags in FLAGS.flags_by_module_dict().items():
    if module.startswith(ours):
      for flag in module_flags:
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def _parse_flags(argv):
  """absl's parsing, with a wrong flag, config key or value as one line instead of a traceback."""
  try:
    return FLAGS(argv)
  except USER_ERRORS as e:  # a config file's own check (an unknown variant)
    exit_with(str(e))
  except flags.Error as e:
    exit_with(plain(e))
  except OSError as e:  # overriding keys of a config file that failed to load
    exit_with(f"cannot load --config: {e}")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    exit_with(f"bad config override among {overrides}: {plain(e)}")


def stop_now(message: str, status: int):
  """The one line, then the process ends at once, as a kill would end it.

  By now every `finally` on the way up has run (temporary files removed, locks
  released). Left to the interpreter's shutdown, background threads (an
  asynchronous checkpoint write, the input pipeline's prefetch) race it and
  print their own errors after the line ("cannot schedule new futures after
  interpreter shutdown"). What such a thread leaves half-written is what a
  killed run leaves, and a killed run resumes to the same result
  (bench/fault_run.py).
  """
  print(f"error: {message}", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)


def exit_with(message: str, status: int = 1):
  """Prints one line, "error: ...": the message's first line and, if it differs, its last."""
  lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
  summary = lines[0] if lines else "unknown error"
  if len(lines) > 1 and lines[-1] != lines[0]:
    summary = f"{summary} {lines[-1]}"
  print(f"error: {summary}", file=sys.stderr)
  sys.exit(status)
