"""A `Case`: the files of one subject and where it goes, as dataset layouts find them.

Layout parsers (IXI, BraTS, MSLUB, folders) only produce cases; preprocessing
and the TFDS writers only consume them, so a new layout is one small parser.
"""

import dataclasses
import zlib


@dataclasses.dataclass(frozen=True)
class Case:
  subject_id: str
  image: str
  split: str  # "train", "validation" or "test"
  anomaly_type: str = "none"
  anomaly_mask: str | None = None
  brain_mask: str | None = None
  # Lesion voxels leave the brain mask (train on lesioned brains without their lesions).
  exclude_anomaly_from_brain: bool = False
  # Further modalities of the same session, in world register with `image`: extra channels,
  # carried through `image`'s registration.
  extra_images: tuple[str, ...] = ()


def subject_fraction(subject_id: str) -> float:
  """A stable pseudo-random number in [0, 1) per subject: splits never move with file order."""
  return (zlib.crc32(subject_id.encode()) % 10_000) / 10_000.0


def healthy_split(subject_id: str, validation_fraction: float = 0.15) -> str:
  """"validation" for a stable ~15 % of subjects, else "train"."""
  return "validation" if subject_fraction(subject_id) < validation_fraction else "train"
