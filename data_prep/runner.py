"""Preprocess many cases on every core, resumably, skipping (and counting) bad files.

One process per volume at a time (SimpleITK runs single-threaded inside, so
results do not depend on the thread count), "spawn" workers because callers
may already hold JAX threads; one worker (or one volume) runs in this process.
Volumes with a cache file are not redone; one cached before today's QC
measures is redone through its cached registration, which skips the slow
search. A file that cannot be used is logged with its name and the reason,
counted, and left out; the build goes on with the others.
"""

import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
import time

from data_prep import cache, cores
from data_prep.cases import Case
from data_prep.config import PrepConfig
from data_prep.errors import PrepError
from data_prep.pipeline import preprocess

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunSummary:
  done: dict[str, str] = dataclasses.field(default_factory=dict)  # subject -> cache file
  cached: int = 0
  remeasured: int = 0  # cached before today's QC measures, redone through their registration
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # subject -> reason
  seconds: float = 0.0

  def line(self) -> str:
    return (f"{len(self.done)} volumes ready ({self.cached} from cache, {self.remeasured} "
            f"re-measured for QC), {len(self.skipped)} skipped, {self.seconds:.0f} s")


def num_workers() -> int:
  env = os.environ.get("BRAINSEG_PREP_WORKERS")
  return max(1, int(env)) if env else max(1, min(cores.usable(), 8))


def _run_one(args) -> tuple[str, str, str]:
  """(subject id, "ok"/"skip", cache path or reason). Top-level so workers can pickle it.

  With a registration found before (`template_to_scan`), only the QC is new: the
  volume is redone through that registration, not searched again.
  """
  case, config, work_dir, template_to_scan = args
  path = cache.path_for(work_dir, case.subject_id)
  try:
    result = preprocess(case.image, config, case.anomaly_mask, case.brain_mask,
                        extra_images=case.extra_images, template_to_scan=template_to_scan)
  except PrepError as e:
    return case.subject_id, "skip", str(e)
  except (RuntimeError, ValueError) as e:  # SimpleITK failures, e.g. no overlap after registration
    return case.subject_id, "skip", f"{case.image}: {str(e).strip().splitlines()[-1]}"
  cache.save(path, result)
  return case.subject_id, "ok", path


def _pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
  """`workers` spawned processes (see the module docstring for why spawn)."""
  return concurrent.futures.ProcessPoolExecutor(
      max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def parallel_map(fn, items, workers: int | None = None) -> list:
  """[fn(item) for item in items], one item per worker process at a time, in order.

  `fn` must be a top-level function (workers pickle it) that returns rather than
  raises for a bad input, so one file never stops the others.
  """
  items = list(items)
  workers = workers or num_workers()
  if workers == 1 or len(items) <= 1:
    return [fn(item) for item in items]
  with _pool(workers) as pool:
    return list(pool.map(fn, items))


def _results(todo, workers: int):
  """`_run_one` of every job as it finishes; one worker runs them in this process."""
  if workers == 1 or len(todo) <= 1:
    yield from map(_run_one, todo)
    return
  with _pool(workers) as pool:
    futures = [pool.submit(_run_one, job) for job in todo]
    for future in concurrent.futures.as_completed(futures):
      yield future.result()


def run(cases: list[Case], config: PrepConfig, work_dir: str,
        workers: int | None = None) -> RunSummary:
  """Every case preprocessed into `work_dir` (or found there)."""
  start = time.time()
  summary = RunSummary()
  todo = []
  for case in cases:
    path = cache.path_for(work_dir, case.subject_id)
    if not os.path.exists(path):
      todo.append((case, config, work_dir, None))
    elif cache.needs_new_qc(path, config):
      todo.append((case, config, work_dir, cache.load(path).record.template_to_scan))
      summary.remeasured += 1
    else:
      summary.done[case.subject_id] = path
      summary.cached += 1
  workers = workers or num_workers()
  log.info("preprocessing %d volumes (%d cached, %d of those for new QC measures only) with %d "
           "workers into %s", len(todo), summary.cached + summary.remeasured,
           summary.remeasured, workers, work_dir)
  for i, (subject_id, status, value) in enumerate(_results(todo, workers), 1):
    if status == "ok":
      summary.done[subject_id] = value
    else:
      summary.skipped[subject_id] = value
      log.warning("skipped %s: %s", subject_id, value)
    if i % max(1, len(todo) // 20) == 0 or i == len(todo):
      elapsed = time.time() - start
      log.info("preprocessed %d/%d (%.0f s, about %.0f min left)", i, len(todo), elapsed,
               elapsed / i * (len(todo) - i) / 60)
  summary.seconds = time.time() - start
  log.info("%s", summary.line())
  return summary
