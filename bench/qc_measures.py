"""Registration-QC measures, today's and candidates, on chosen scans: evidence for a better rule.

    python bench/qc_measures.py --resolution=64 SCAN.nii.gz [SCAN ...] > measures.tsv

Each scan goes through the default pipeline (`data_prep.pipeline.preprocess`); the
arrays that `qc.measure` receives (the registered scan on the output grid, the
template brain, the field of view, the background level) are taken as they are
passed, and several measures are printed per scan:
  * core_background: today's rule (dark voxels in the template brain core);
  * outside_head: core voxels outside the scan's head mask (not dark, closed by
    2 voxels, holes filled): air only, never CSF or skull;
  * shell_dark: dark voxels in the template brain's outer shell (depth 1-3
    voxels): skull under a template that lies over the skull ring;
  * deep_dark: dark voxels deeper than 3 voxels (ventricles, on FLAIR).
The README's "Known problem" paragraph quotes these on the elderly FLAIR scans
and on passing and failing LGG patients.
"""

import argparse
import pathlib
import sys

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from data_prep import pipeline, qc  # noqa: E402
from data_prep.config import PrepConfig  # noqa: E402


def captured_qc_inputs(scan: str, resolution: int, modality: str) -> dict:
  """The arguments `qc.measure` is called with while `scan` is preprocessed."""
  captured = {}
  original = qc.measure

  def spy(template_to_scan, template_brain, in_view, image, background_level):
    result = original(template_to_scan, template_brain, in_view, image, background_level)
    captured.update(brain=np.asarray(template_brain, bool), in_view=np.asarray(in_view, bool),
                    image=np.asarray(image), level=float(background_level), qc=result)
    return result

  qc.measure = spy
  try:
    pipeline.preprocess(scan, PrepConfig(resolution=resolution, modality=modality))
  finally:
    qc.measure = original
  return captured


def measures(c: dict) -> dict:
  dark = c["image"] < c["level"]
  brain, view = c["brain"], c["in_view"]
  core = ndimage.binary_erosion(brain) & view
  deep = ndimage.binary_erosion(brain, iterations=3) & view
  shell = core & ~deep
  head = ndimage.binary_fill_holes(ndimage.binary_closing(~dark, iterations=2))
  return {"volume_scale": c["qc"].volume_scale, "core_background": c["qc"].brain_in_background,
          "outside_head": (~head)[core].mean(), "shell_dark": dark[shell].mean(),
          "deep_dark": dark[deep].mean()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("scans", nargs="+")
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--modality", default="flair")
  args = parser.parse_args()
  names = None
  for scan in args.scans:
    values = measures(captured_qc_inputs(scan, args.resolution, args.modality))
    if names is None:
      names = list(values)
      print("scan\t" + "\t".join(names))
    print(pathlib.Path(scan).name + "\t" + "\t".join(f"{values[n]:.4f}" for n in names),
          flush=True)


if __name__ == "__main__":
  main()
