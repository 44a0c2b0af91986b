"""The one slice schema shared by every dataset builder.

Every builder writes axial slices with these features, so every model and the
evaluation run on any dataset by changing only the config's dataset name.
Volumes are split into slices by subject, never by slice, and can be put back
together from `subject_id` and `slice_index`.
"""

import numpy as np
import tensorflow_datasets as tfds

# "wmh": white-matter hyperintensities of ageing (the elderly FLAIR sample).
ANOMALY_TYPES = ("none", "ms", "glioma", "wmh")


def variant_name(channels, resolution: int) -> str:
  """The builder config name: "flair_64", or "flair-t1-t1c_64" for several channels."""
  return f"{'-'.join(channels)}_{resolution}"


def slice_features(resolution: int, channels: int = 1) -> tfds.features.FeaturesDict:
  """Features of one axial slice at `resolution` x `resolution`, one channel per modality."""
  shape = (resolution, resolution, 1)
  zlib = tfds.features.Encoding.ZLIB
  return tfds.features.FeaturesDict({
      # Intensities normalised inside the brain; 0 outside it. Channels in the order of the
      # variant's modalities (the first is the one `modality` names).
      "image": tfds.features.Tensor(shape=(resolution, resolution, channels), dtype=np.float32,
                                    encoding=zlib),
      "brain_mask": tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding=zlib),
      # All zero on healthy slices; the ground truth only evaluation reads.
      "anomaly_mask": tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding=zlib),
      "subject_id": tfds.features.Text(),
      "slice_index": np.int32,
      "num_slices": np.int32,
      # Kind of anomaly the subject carries ("none" for healthy subjects).
      "anomaly_type": tfds.features.Text(),
      # Provenance: the scan the slice came from ("synthetic:<seed>" for generated
      # subjects) and its modality, so a result can be traced back to a file.
      "source_file": tfds.features.Text(),
      "modality": tfds.features.Text(),
  })
