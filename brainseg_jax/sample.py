"""A sample scan to try predict on, made here: no download, no patient data.

    python -m brainseg_jax.sample --output_dir=sample
    python -m brainseg_jax.predict --model=lgg_flair_unet --input=sample/dicom \\
        --output_dir=sample/maps

Writes one synthetic FLAIR subject with a glioma (data_prep/synthetic, built
from the MNI152 template that ships with nilearn) twice: as NIfTI
(`sample_flair.nii.gz`, with its true lesion mask `sample_lesion.nii.gz`) and
as a DICOM series (`dicom/`), as a scanner would export it. Skull-stripped,
1.5 mm in-plane, 128 x 128 x 96: what a model expects of a scan, not a real one.
"""

import os

import nibabel as nib
from absl import flags, logging

from brainseg_jax import cli
from brainseg_jax import workdir as workdir_lib

FLAGS = flags.FLAGS


def write_sample(output_dir: str, seed: int = 7) -> dict[str, str]:
  """The sample subject as NIfTI (scan and lesion mask) and as a DICOM series; returns paths."""
  from data_prep import atomic, dicom, grid, synthetic

  output_dir = workdir_lib.ensure_writable(output_dir, "--output_dir")
  subject = synthetic.make_subject(synthetic.load_template(128), seed, "flair", "glioma")
  affine = grid.output_grid(128).affine
  paths = {"nifti": os.path.join(output_dir, "sample_flair.nii.gz"),
           "lesion": os.path.join(output_dir, "sample_lesion.nii.gz"),
           "dicom": os.path.join(output_dir, "dicom")}
  with atomic.atomic_path(paths["nifti"]) as tmp:
    nib.save(nib.Nifti1Image(subject.image * 1000.0, affine), tmp)
  with atomic.atomic_path(paths["lesion"]) as tmp:
    nib.save(nib.Nifti1Image(subject.anomaly_mask, affine), tmp)
  dicom.write_series(subject.image * 1000.0, affine, paths["dicom"], "AX FLAIR sample", seed)
  return paths


def main():
  flags.DEFINE_string("output_dir", "sample", "Where the sample scan goes (created).")

  def command():
    paths = write_sample(FLAGS.output_dir)
    logging.info("sample FLAIR scan with a glioma: %s (NIfTI), %s (DICOM series), true "
                 "lesion: %s", paths["nifti"], paths["dicom"], paths["lesion"])

  cli.run(command)


if __name__ == "__main__":
  main()
