"""Errors about a user's scans or preprocessing settings, always naming the file.

`PrepError` is data_prep's own base, so this bottom layer depends on nothing
above it. The command-line entry points print any `PrepError` as one line (see
`brainseg_jax.errors.USER_ERRORS`); a dataset build catches it per volume, logs
a skip and counts it.
"""


class PrepError(Exception):
  """A problem with the user's scans or preprocessing settings that the user can fix."""


class InputFileError(PrepError):
  """A scan or mask file that cannot be used, with the file and the problem in the message."""

  def __init__(self, path, problem: str):
    self.path = str(path)
    self.problem = problem
    super().__init__(f"{self.path}: {problem}")
