"""Errors about a user's scan files, always naming the file.

`InputFileError` is a `UserError`, so the command-line entry points print it as
one line; the dataset build catches it per volume, logs a skip and counts it.
"""

from brainseg_jax.errors import UserError


class InputFileError(UserError):
  """A scan or mask file that cannot be used, with the file and the problem in the message."""

  def __init__(self, path, problem: str):
    self.path = str(path)
    self.problem = problem
    super().__init__(f"{self.path}: {problem}")
