"""Wall time per named stage of one scan's processing: for predict's report and bench/.

A user waiting on a scan, and anyone making it faster, needs to know which
stage the seconds went to (N4, registration, scoring, writing), not only the
total.
"""

import contextlib
import time


class Stopwatch:
  """Seconds per stage, in the order the stages first ran; a stage run twice adds up."""

  def __init__(self):
    self.seconds: dict[str, float] = {}

  @contextlib.contextmanager
  def stage(self, name: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

  def total(self) -> float:
    return sum(self.seconds.values())
