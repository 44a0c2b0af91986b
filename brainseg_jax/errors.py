"""The exception types that entry points turn into a one-line message.

Anything the user can fix (a config, a path, a file) raises `UserError`, or
data_prep's `PrepError` for scans; the command-line entry points print the
message and exit non-zero instead of showing a traceback from deep inside JAX
or Orbax.
"""

from data_prep.errors import PrepError


class UserError(Exception):
  """A problem with the user's input, config or files, with a message that names it."""


# What an entry point (and predict, per scan) reports as one line.
USER_ERRORS = (UserError, PrepError)
