"""The one exception type that entry points turn into a one-line message.

Anything the user can fix (a config, a path, a file) raises `UserError`; the
command-line entry points print its message and exit non-zero instead of
showing a traceback from deep inside JAX or Orbax.
"""


class UserError(Exception):
  """A problem with the user's input, config or files, with a message that names it."""
