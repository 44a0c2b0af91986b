"""Registration-QC measures of chosen scans, and the verdict: evidence for the rule's ranges.

    python bench/qc_measures.py --resolution=64 --modality=flair SCAN.nii.gz [SCAN ...] > qc.tsv

Each scan goes through the default pipeline (`data_prep.pipeline.preprocess`)
and one tab-separated row per scan gives every measure of `data_prep.qc` and
the reasons it is flagged (empty: passes). A build writes the same numbers for
its own volumes to `qc_<variant>.csv`; this script serves scans outside any
build (a new site's, a skull-stripped set's) before a rule change.
docs/registration_qc.md quotes these on the elderly FLAIR and
TCGA scans.
"""

import argparse
import dataclasses
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from data_prep import pipeline, qc  # noqa: E402
from data_prep.config import PrepConfig  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("scans", nargs="+")
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--modality", default="flair")
  args = parser.parse_args()
  names = [f.name for f in dataclasses.fields(qc.RegistrationQC)]
  print("\t".join(["scan", *names, "flagged"]))
  for scan in args.scans:
    result = pipeline.preprocess(scan, PrepConfig(resolution=args.resolution,
                                                  modality=args.modality)).qc
    values = [f"{getattr(result, n):.4f}" for n in names]
    reasons = "; ".join(result.flag_reasons(args.modality))
    print("\t".join([pathlib.Path(scan).name, *values, reasons]), flush=True)


if __name__ == "__main__":
  main()
