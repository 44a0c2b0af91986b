"""Build a real-scan dataset: `python -m brainseg_jax.build --dataset=ixi --manual_dir=DIR`.

Preprocesses every scan on all cores (resumable: volumes cached as .npz under
<data_dir>/prep_cache are not redone), writes the TFDS array_record dataset
(TFDS writes into a temporary folder and renames it, so a failed build leaves
no half-written dataset), logs each skipped file with the reason and a
summary count, writes a PNG contact sheet of several subjects (`--sheet_subjects=0`: all),
and a CSV of every volume's registration QC (data_prep/qc.py; volumes that fail it are left
out of the dataset and named in the log).

`--shard=i/n` spreads the preprocessing over n machines that share the data dir: each
preprocesses its part into the cache and stops; the same command without `--shard`
then writes the dataset from the cache (data_prep/shard.py, docs/data.md).
"""

import dataclasses
import os

from absl import flags, logging

from brainseg_jax import cli
from brainseg_jax import config as config_lib
from brainseg_jax.datasets import input_pipeline
from brainseg_jax.errors import UserError
from data_prep import atomic, cache, contact_sheet, qc
from data_prep import shard as shard_lib

FLAGS = flags.FLAGS


def build(dataset: str, manual_dir: str, modality: str | None, resolution: int, data_dir: str,
          workers: int = 0, sheet_subjects: int = 8) -> tuple[object, str]:
  """Builds (or finds) the dataset; returns (builder, contact sheet path)."""
  _use_workers(workers)
  builder = input_pipeline.get_builder(
      _dataset_config(dataset, manual_dir, modality, resolution, data_dir))
  for split, info in builder.info.splits.items():
    logging.info("split %s: %d slices", split, info.num_examples)
  summary = getattr(builder, "prep_summary", None)
  if summary is not None:
    for subject, reason in sorted(summary.skipped.items()):
      logging.warning("skipped %s: %s", subject, reason)
    logging.info("preprocessing: %s", summary.line())
  _qc_table(builder)
  return builder, _sheet(builder, sheet_subjects)


def preprocess_shard(dataset: str, manual_dir: str, modality: str | None, resolution: int,
                     data_dir: str, shard: str, workers: int = 0):
  """Preprocesses one shard's scans into the shared cache (no dataset is written)."""
  try:
    part = shard_lib.Shard.parse(shard)
  except ValueError as e:
    raise UserError(str(e)) from None
  _use_workers(workers)
  dataset_config = _dataset_config(dataset, manual_dir, modality, resolution, data_dir)
  builder = input_pipeline.make_builder(dataset_config)
  summary = builder.preprocess_shard(input_pipeline.manual_dir(builder, dataset_config), part)
  for subject, reason in sorted(summary.skipped.items()):
    logging.warning("skipped %s: %s", subject, reason)
  return builder, summary


def _use_workers(workers: int) -> None:
  """Preprocessing processes for this build (0: the default, data_prep/runner.num_workers).

  The TFDS builder runs the preprocessing inside download_and_prepare, which takes
  no such argument: the count reaches data_prep/runner through its environment variable.
  """
  if workers:
    os.environ["BRAINSEG_PREP_WORKERS"] = str(workers)


def _dataset_config(dataset, manual_dir, modality, resolution, data_dir):
  """The dataset block the flags describe (a real-scan dataset)."""
  real_scan_datasets = sorted(n for n in input_pipeline.BUILDERS if n != "synthetic_brain")
  if dataset not in real_scan_datasets:
    raise UserError(f"unknown --dataset {dataset!r}: expected one of {real_scan_datasets}")
  default = input_pipeline.BUILDERS[dataset].MODALITIES[0]
  channels = tuple(m for m in (modality or default).split(",") if m)
  return config_lib.dataset_config(
      name=dataset, modality=channels[0], modalities=channels, resolution=resolution,
      data_dir=data_dir, manual_dir=manual_dir or "")


def _qc_table(builder) -> str:
  """qc_<variant>.csv beside the contact sheet: each cached volume's QC numbers and verdict."""
  work_dir = builder.prep_work_dir()
  path = os.path.join(os.path.dirname(builder.data_dir.rstrip("/")),
                      f"qc_{builder.builder_config.name}.csv")
  measures = [f.name for f in dataclasses.fields(qc.RegistrationQC)]
  lines = [",".join(["subject", *measures, "flagged"])]
  flagged = 0
  for name in sorted(os.listdir(work_dir)) if os.path.isdir(work_dir) else []:
    if not name.endswith(".npz") or ".tmp" in name:
      continue
    registration_qc = cache.load(os.path.join(work_dir, name)).qc
    if registration_qc is None:
      continue
    reasons = "; ".join(registration_qc.flag_reasons(builder.builder_config.modality))
    flagged += bool(reasons)
    values = [f"{getattr(registration_qc, m):.4f}" for m in measures]
    lines.append(",".join([name[:-4], *values, f'"{reasons}"']))
  atomic.write_text(path, "\n".join(lines) + "\n")
  logging.info("registration QC: %d of %d volumes flagged; table: %s", flagged, len(lines) - 1,
               path)
  return path


def _sheet(builder, n: int) -> str:
  path = os.path.join(os.path.dirname(builder.data_dir.rstrip("/")),
                      f"contact_sheet_{builder.builder_config.name}.png")
  return contact_sheet.from_cache(builder.prep_work_dir(), path,
                                  builder.builder_config.resolution,
                                  builder.builder_config.modality, n)


def main():
  flags.DEFINE_string("dataset", None, "Dataset name: ixi, brats_glioma, mslub, elderly_flair, "
                      "nifti_folder, lgg.")
  flags.DEFINE_string("manual_dir", None, "Folder holding the downloaded scans.")
  flags.DEFINE_string("modality", None, "Modality, or several as channels (lgg: flair,t1,t1c); "
                      "default: the dataset's first.")
  flags.DEFINE_integer("resolution", 128, "In-plane size R of the R x R slices (32, 64, 128).")
  flags.DEFINE_string("data_dir", "", "TFDS data dir; default $BRAINSEG_DATA_DIR or TFDS's.")
  flags.DEFINE_integer("workers", 0, "Worker processes; 0: one per core.")
  flags.DEFINE_integer("sheet_subjects", 8, "Subjects on the contact sheet.")
  flags.DEFINE_string("shard", "", "i/n: preprocess only this machine's part of the scans into "
                      "the shared cache and stop; then run without --shard to write the dataset.")

  def command():
    cli.require_flags("dataset")
    if FLAGS.shard:
      builder, summary = preprocess_shard(FLAGS.dataset, FLAGS.manual_dir, FLAGS.modality,
                                          FLAGS.resolution, FLAGS.data_dir, FLAGS.shard,
                                          FLAGS.workers)
      print(f"shard {FLAGS.shard}: {summary.line()} in {builder.prep_work_dir()}; when every "
            "shard is done, the same command without --shard writes the dataset")
      return
    builder, sheet = build(FLAGS.dataset, FLAGS.manual_dir, FLAGS.modality, FLAGS.resolution,
                           FLAGS.data_dir, FLAGS.workers, FLAGS.sheet_subjects)
    print(f"dataset: {builder.data_dir}")
    if sheet:
      print(f"contact sheet: {sheet}")

  cli.run(command)


if __name__ == "__main__":
  main()
