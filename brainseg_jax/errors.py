"""The exception types that entry points turn into a one-line message.

Anything the user can fix (a config, a path, a file) raises `UserError`, or
data_prep's `PrepError` for scans; the command-line entry points print the
message and exit non-zero instead of showing a traceback from deep inside JAX
or Orbax. The checks below raise it for a config key out of range.
"""

import ast

from data_prep.errors import PrepError


class UserError(Exception):
  """A problem with the user's input, config or files, with a message that names it."""


# What an entry point (and predict, per scan) reports as one line.
USER_ERRORS = (UserError, PrepError)


def require(condition: bool, key: str, value, expected: str) -> None:
  """Raises UserError naming the config `key` unless `condition`."""
  if not condition:
    raise UserError(f"config key {key}={value!r} is out of range: expected {expected}")


def one_of(value, choices, key: str) -> None:
  if value not in choices:
    raise UserError(f"unknown {key} {value!r}: expected one of {', '.join(map(str, choices))}")


def positive_int(config, key: str, prefix: str = "", minimum: int = 1) -> None:
  """Requires `config[key]` to be an integer (not a bool) of at least `minimum`."""
  value = config[key]
  require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
          prefix + key, value, f"an integer >= {minimum}")


def plain(error: Exception) -> str:
  """An exception's message as words: a KeyError's repr quotes and escapes it ('\\'x\\'\\n...')."""
  if isinstance(error, KeyError) and error.args:
    return str(error.args[0])
  text = str(error)
  if text.startswith(("'", '"')) and text.endswith(("'", '"')):
    try:
      text = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      pass
  return text
