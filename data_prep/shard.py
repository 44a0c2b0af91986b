"""One machine's part of a build spread over several: `--shard=i/n`.

Volumes are independent, so n machines sharing one data folder (a network file
system) each preprocess every n-th subject into the shared per-volume cache;
a final build without a shard finds every volume cached and only writes the
dataset. A subject's shard follows from its id alone (a stable hash), so every
machine agrees on its part whatever it lists, and a layout may pick its part
before its own slow steps (the LGG restacking) without a second selection
changing it. Parts are as even as a fair coin makes them.
"""

import dataclasses
import re
import zlib

_SHARD = re.compile(r"^(\d+)/(\d+)$")


@dataclasses.dataclass(frozen=True)
class Shard:
  index: int  # 0-based
  count: int

  @classmethod
  def parse(cls, text: str) -> "Shard":
    """`"i/n"` with 0 <= i < n; a ValueError naming the expected form otherwise."""
    m = _SHARD.match(text.strip())
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
      raise ValueError(f"--shard={text!r}: expected i/n with 0 <= i < n, e.g. 0/2 and 1/2")
    return cls(int(m.group(1)), int(m.group(2)))

  def holds(self, subject_id: str) -> bool:
    """Whether `subject_id` is this shard's: crc32 of the id, mod n, is i."""
    return zlib.crc32(subject_id.encode()) % self.count == self.index

  def __str__(self) -> str:
    return f"{self.index}/{self.count}"
