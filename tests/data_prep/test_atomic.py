"""Whole files or none: a failed or killed writer never leaves a file under the final name."""

import os
import stat

import pytest

from data_prep import atomic


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
  target = tmp_path / "metrics.json"
  with pytest.raises(RuntimeError), atomic.atomic_path(str(target)) as tmp:
    with open(tmp, "w") as f:
      f.write('{"half": ')
    raise RuntimeError("killed mid-write")
  assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_only_when_the_new_one_is_complete(tmp_path):
  target = tmp_path / "summary.md"
  target.write_text("old")
  with pytest.raises(RuntimeError), atomic.atomic_path(str(target)) as tmp:
    open(tmp, "w").write("new, half")
    raise RuntimeError
  assert target.read_text() == "old"
  atomic.write_text(str(target), "new")
  assert target.read_text() == "new"


@pytest.mark.parametrize("name", ["a.nii.gz", "b.png", "c.npz", "d.json", "e.csv"])
def test_the_temporary_keeps_the_suffix_writers_pick_the_format_from(tmp_path, name):
  with atomic.atomic_path(str(tmp_path / name)) as tmp:
    assert tmp.endswith(name[name.index("."):]) and os.path.basename(tmp).startswith(".")
    open(tmp, "w").close()


def test_files_get_the_usual_permissions_not_0600(tmp_path):
  old = os.umask(0o022)
  try:
    atomic.write_json(str(tmp_path / "metrics.json"), {"dice": 0.5})
  finally:
    os.umask(old)
  assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path):
  target = str(tmp_path / "per_volume.csv")
  with atomic.atomic_path(target) as first, atomic.atomic_path(target) as second:
    assert first != second
    open(first, "w").write("first")
    open(second, "w").write("second")
  assert open(target).read() in ("first", "second")
