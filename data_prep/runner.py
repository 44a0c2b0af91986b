"""Preprocess many cases on every core, resumably, skipping (and counting) bad files.

One process per volume at a time (SimpleITK runs single-threaded inside, so
results do not depend on the thread count), "spawn" workers because callers
may already hold JAX threads. Volumes with a cache file are not redone. A
file that cannot be used is logged with its name and the reason, counted, and
left out; the build goes on with the others.
"""

import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
import time

from data_prep import cache
from data_prep.cases import Case
from data_prep.config import PrepConfig
from data_prep.errors import PrepError
from data_prep.pipeline import preprocess

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunSummary:
  done: dict[str, str] = dataclasses.field(default_factory=dict)  # subject -> cache file
  cached: int = 0
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # subject -> reason
  seconds: float = 0.0

  def line(self) -> str:
    return (f"{len(self.done)} volumes ready ({self.cached} from cache), "
            f"{len(self.skipped)} skipped, {self.seconds:.0f} s")


def num_workers() -> int:
  env = os.environ.get("BRAINSEG_PREP_WORKERS")
  return max(1, int(env)) if env else max(1, min(len(os.sched_getaffinity(0)), 8))


def _run_one(args) -> tuple[str, str, str]:
  """(subject id, "ok"/"skip", cache path or reason). Top-level so workers can pickle it."""
  case, config, work_dir = args
  path = cache.path_for(work_dir, case.subject_id)
  try:
    result = preprocess(case.image, config, case.anomaly_mask, case.brain_mask,
                        extra_images=case.extra_images)
  except PrepError as e:
    return case.subject_id, "skip", str(e)
  except (RuntimeError, ValueError) as e:  # SimpleITK failures, e.g. no overlap after registration
    return case.subject_id, "skip", f"{case.image}: {str(e).strip().splitlines()[-1]}"
  cache.save(path, result)
  return case.subject_id, "ok", path


def run(cases: list[Case], config: PrepConfig, work_dir: str,
        workers: int | None = None) -> RunSummary:
  """Every case preprocessed into `work_dir` (or found there)."""
  start = time.time()
  summary = RunSummary()
  todo = []
  for case in cases:
    path = cache.path_for(work_dir, case.subject_id)
    if os.path.exists(path):
      summary.done[case.subject_id] = path
      summary.cached += 1
    else:
      todo.append((case, config, work_dir))
  workers = workers or num_workers()
  log.info("preprocessing %d volumes (%d cached) with %d workers into %s",
           len(todo), summary.cached, workers, work_dir)
  if todo:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
      futures = [pool.submit(_run_one, job) for job in todo]
      for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
        subject_id, status, value = future.result()
        if status == "ok":
          summary.done[subject_id] = value
        else:
          summary.skipped[subject_id] = value
          log.warning("skipped %s: %s", subject_id, value)
        if i % max(1, len(todo) // 20) == 0 or i == len(todo):
          log.info("preprocessed %d/%d (%.0f s)", i, len(todo), time.time() - start)
  summary.seconds = time.time() - start
  log.info("%s", summary.line())
  return summary
