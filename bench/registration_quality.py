"""Registration quality and speed on the shared IXI T1 sample: per-scan brain-mask Dice and QC.

    python bench/registration_quality.py --out=ixi_registration.json          # all 184 scans
    python bench/registration_quality.py --subjects=IXI239,IXI079 --out=...   # a few

Each scan goes through the default pipeline (`data_prep.pipeline.preprocess`,
one SimpleITK thread, as in a build worker; one worker process per core) at the
QC grid's resolution. The template brain mask carried onto the scan's own grid
is compared with the DLMUSE parcellation's label > 0 (brain-mask Dice), and the
registration-QC verdict is recorded. The output JSON holds per-scan rows and a
summary (median Dice, flagged scans, seconds per stage): the evidence a
registration change must match (docs/benchmarks_data.md, tests/data_prep/
test_registration_quality.py).
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import sys
import time

import nibabel as nib
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from data_prep import pipeline, qc  # noqa: E402
from data_prep.config import PrepConfig  # noqa: E402

_DEFAULT_DATA = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def scan_row(subject: str, prepared, parcellation: str) -> dict:
  """Brain-mask Dice of a preprocessed T1 scan against its parcellation, and its QC verdict."""
  reference = nib.load(parcellation).get_fdata() > 0
  carried = pipeline.template_mask_on_scan(prepared.record)
  dice = 2 * (carried & reference).sum() / (carried.sum() + reference.sum())
  return {"subject": subject.split("-")[0], "dice": round(float(dice), 4),
          "flagged": prepared.qc.flag_reasons("t1")}


def measure_scan(scan: str, parcellation: str) -> dict:
  """scan_row of one T1 scan preprocessed now, with its seconds per stage."""
  start = time.perf_counter()
  result = pipeline.preprocess(scan, PrepConfig(resolution=qc.RESOLUTION, modality="t1"))
  seconds = time.perf_counter() - start
  return {**scan_row(pathlib.Path(scan).name, result, parcellation),
          "seconds": round(seconds, 2),
          "stages": {k: round(v, 2) for k, v in result.timings.items()}}


def ixi_pairs(data: pathlib.Path, subjects=()) -> list[tuple[str, str]]:
  root = data / "ixi_t1"
  pairs = []
  for scan in sorted((root / "t1").glob("IXI*_T1.nii.gz")):
    subject = scan.name.split("-")[0]
    if subjects and subject not in subjects:
      continue
    pairs.append((str(scan), str(root / "dlmuse" / scan.name.replace("_T1.", "_T1_DLMUSE."))))
  return pairs


def summary(rows: list[dict]) -> dict:
  dice = np.array([r["dice"] for r in rows])
  stages = {k: round(float(np.median([r["stages"][k] for r in rows])), 2)
            for k in rows[0]["stages"]}
  return {"scans": len(rows), "dice_median": round(float(np.median(dice)), 4),
          "dice_mean": round(float(dice.mean()), 4), "dice_min": round(float(dice.min()), 4),
          "flagged": sorted(r["subject"] for r in rows if r["flagged"]),
          "seconds_median": round(float(np.median([r["seconds"] for r in rows])), 2),
          "stage_seconds_median": stages}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default=os.environ.get("BRAINSEG_SAMPLE_DATA", _DEFAULT_DATA))
  parser.add_argument("--subjects", default="", help="comma-separated IXI ids (default: all)")
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  subjects = tuple(s for s in args.subjects.split(",") if s)
  pairs = ixi_pairs(pathlib.Path(args.data), subjects)
  start = time.perf_counter()
  with concurrent.futures.ProcessPoolExecutor(args.workers) as pool:
    rows = list(pool.map(measure_scan, *zip(*pairs, strict=True)))
  report = {"summary": {**summary(rows), "wall_seconds": round(time.perf_counter() - start, 1),
                        "workers": args.workers},
            "scans": rows}
  pathlib.Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
  print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
  main()
