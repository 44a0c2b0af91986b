"""Preprocessing benchmarks on the real sample scans (../shared/data).

    nice -n 10 python bench/preprocess_benchmark.py                 # time one 1 mm volume
    python bench/preprocess_benchmark.py --ixi_cache=DIR            # brain-mask Dice vs DLMUSE

Wall and CPU seconds (CPU = the cost on an idle core when others share the
machine). The timing runs the full default pipeline (resample, N4, affine registration,
template brain mask, normalisation, 128 x 128 slices) on a TCGA FLAIR scan,
240 x 240 x 155 at 1 mm, single-threaded as in a build worker. The Dice
reads the per-volume cache an IXI build left (records of the registration)
and compares the template brain mask carried onto each scan with the DLMUSE
parcellation's label > 0.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import nibabel as nib
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from data_prep import cache, pipeline  # noqa: E402
from data_prep.config import PrepConfig  # noqa: E402

_DEFAULT_DATA = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def time_one_volume(data: pathlib.Path, repeats: int) -> dict:
  image = data / "tcga_glioma" / "TCGA-DU-7294" / "TCGA-DU-7294_fla_bet_normalized.nii.gz"
  labels = image.parent / "TCGA-DU-7294_tumor_fusion_mav.nii.gz"
  config = PrepConfig(resolution=128, modality="flair")
  pipeline.preprocess(image, PrepConfig(resolution=32, modality="flair"))  # warm caches
  seconds, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    pipeline.preprocess(image, config, anomaly_mask_path=labels)
    seconds.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return {"volume": image.name, "shape": list(nib.load(image).shape),
          "seconds": [round(s, 2) for s in seconds],
          "median_s": round(float(np.median(seconds)), 2),
          # CPU seconds: what the volume costs on an idle core, whatever else is running.
          "cpu_seconds": [round(s, 2) for s in cpu], "load_average": os.getloadavg()[0]}


def ixi_dice(data: pathlib.Path, cache_dir: str) -> dict:
  dice = {}
  for name in sorted(os.listdir(cache_dir)):
    if not name.endswith(".npz") or ".tmp" in name:
      continue
    record = cache.load(os.path.join(cache_dir, name)).record
    subject = name[:-4]
    parcellation = data / "ixi_t1" / "dlmuse" / f"{subject}_T1_DLMUSE.nii.gz"
    reference = nib.load(parcellation).get_fdata() > 0
    carried = pipeline.template_mask_on_scan(record)
    dice[subject] = float(2 * (carried & reference).sum() / (carried.sum() + reference.sum()))
  values = np.array(list(dice.values()))
  return {"subjects": len(values), "mean": round(float(values.mean()), 4),
          "median": round(float(np.median(values)), 4), "min": round(float(values.min()), 4),
          "max": round(float(values.max()), 4),
          "below_0.9": sorted(s for s, d in dice.items() if d < 0.9),
          "lowest_5": {s: round(d, 4) for s, d in sorted(dice.items(), key=lambda t: t[1])[:5]}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default=os.environ.get("BRAINSEG_SAMPLE_DATA", _DEFAULT_DATA))
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--ixi_cache", default="", help="prep_cache folder of an IXI build")
  args = parser.parse_args()
  data = pathlib.Path(args.data)
  if args.ixi_cache:
    print(json.dumps({"ixi_template_mask_dice": ixi_dice(data, args.ixi_cache)}, indent=1))
  else:
    print(json.dumps({"preprocess_one_volume": time_one_volume(data, args.repeats)}, indent=1))


if __name__ == "__main__":
  main()
