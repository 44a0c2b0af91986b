"""What a user points at, as scans: a file, a folder tree, a DICOM series, a BIDS dataset.

    find(path, modality)  -> [Source, ...]   every scan under `path`, named for its outputs
    as_nifti(source)      -> a NIfTI path     (converted in a temporary folder if needed)

- NIfTI (.nii, .nii.gz) is read as it is; any other format SimpleITK reads
  (.mgz, .nrrd, .nhdr, .mha, .mhd) is converted to NIfTI first.
- A folder of DICOM files is one scan per series (SimpleITK's GDCM series
  reader), named by its series description; a folder whose DICOM files form no
  readable series is named with its reason.
- A folder is searched recursively; outputs are named by the file's stem, or
  by its path below the input where stems repeat. Masks and labels beside the
  scans are no scans: folders named like `lesion_masks/`, `brain_masks/`,
  `labels/`, `segmentations/`, `derivatives/` are not searched, nor files whose
  name ends in `_mask`, `_seg`, `_dseg`, `_label(s)` (the layouts in docs/data.md).
- A BIDS dataset (`dataset_description.json` or `sub-*` folders at its root):
  the `anat/` images of the model's modality only (`_FLAIR`, `_T1w`, `_T2w`,
  `_ce-*_T1w`), named `sub-X[_ses-Y][_...]` as BIDS names them.
- For a model of several modalities, a plain folder's scans are grouped into
  sessions by name (`sessions`): files in one folder whose names differ only in
  a modality word (`flair`/`fla`/`t2f`, `t1`/`t1w`/`t1n`, `t1c`/`t1ce`/`t1gd`,
  `t2`/`t2w`, `pd`) are one session.
"""

import contextlib
import dataclasses
import locale
import os
import re
import shutil
import tempfile

from data_prep.errors import InputFileError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
OTHER_SUFFIXES = (".mgz", ".nrrd", ".nhdr", ".mha", ".mhd")
# BIDS suffixes of the modalities the models take.
BIDS_SUFFIX = {"flair": r"_FLAIR", "t1": r"_T1w", "t1c": r"_ce-[^_]+_T1w", "t2": r"_T2w",
               "pd": r"_PDw"}


# Folders and file stems that hold masks or labels, not scans.
_NOT_SCAN_FOLDER = re.compile(r"(mask|label|seg|derivatives|^wmh$)", re.IGNORECASE)
_NOT_SCAN_FILE = re.compile(r"(^|[_-])(mask|brainmask|seg|dseg|probseg|label|labels|gt)$",
                            re.IGNORECASE)


@contextlib.contextmanager
def keeping_locale():
  """GDCM (SimpleITK's DICOM reader and writer) sets the C locale for the whole process.

  Python then reads every text file as ASCII: a report or a config with one
  non-ASCII character fails to load later in the same run. The locale is put back.
  """
  saved = locale.setlocale(locale.LC_ALL)
  try:
    yield
  finally:
    locale.setlocale(locale.LC_ALL, saved)


@dataclasses.dataclass(frozen=True)
class Source:
  """One scan: where it is (`path`: a file, or a DICOM folder), how its outputs are named."""
  path: str
  name: str
  dicom_files: tuple[str, ...] = ()  # the series' files, in order, for a DICOM series
  bids_folder: str = ""  # in a BIDS dataset: sub-X[/ses-Y]/anat

  def __str__(self) -> str:
    return self.path if not self.dicom_files else f"{self.path} (DICOM series {self.name})"


def scan_stem(path: str) -> str:
  name = os.path.basename(path.rstrip(os.sep))
  for suffix in NIFTI_SUFFIXES + OTHER_SUFFIXES:
    if name.endswith(suffix):
      return name[: -len(suffix)]
  return name


def is_bids(path: str) -> bool:
  if not os.path.isdir(path):
    return False
  return os.path.isfile(os.path.join(path, "dataset_description.json")) or any(
      entry.startswith("sub-") and os.path.isdir(os.path.join(path, entry))
      for entry in os.listdir(path))


def find(path: str, modality: str = "flair") -> tuple[list[Source], dict[str, str]]:
  """(the scans under `path`, {folder: why it is no scan}) for a file, folder or BIDS root."""
  path = os.path.abspath(path)
  if os.path.isfile(path):
    return [Source(path, scan_stem(path))], {}
  if not os.path.isdir(path):
    raise InputFileError(path, "does not exist")
  if is_bids(path):
    return _bids(path, modality), {}
  sources, problems = [], {}
  for folder, dirs, files in os.walk(path, followlinks=False):
    dirs[:] = sorted(d for d in dirs if not _NOT_SCAN_FOLDER.search(d))
    images = sorted(f for f in files if f.endswith(NIFTI_SUFFIXES + OTHER_SUFFIXES)
                    and not f.startswith(".") and not _NOT_SCAN_FILE.search(scan_stem(f)))
    sources += [Source(os.path.join(folder, f), "") for f in images]
    others = [f for f in files if f not in images and not f.startswith(".")]
    if others and _looks_like_dicom(folder, others):
      with keeping_locale():
        series, problem = _dicom_series(folder)
      sources += series
      if problem:
        problems[folder] = problem
  return _named(sources, path), problems


def _named(sources: list[Source], root: str) -> list[Source]:
  """Names for outputs: the stem (or series description), made unique by the path if needed."""
  stems = [s.name or scan_stem(s.path) for s in sources]
  named = []
  for source, stem in zip(sources, stems, strict=True):
    if stems.count(stem) > 1:
      relative = os.path.relpath(source.path, root).replace(os.sep, "_")
      stem = scan_stem(relative) + (f"_{source.name}" if source.dicom_files else "")
    named.append(dataclasses.replace(source, name=_safe(stem)))
  return named


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "scan"


def _looks_like_dicom(folder: str, files: list[str]) -> bool:
  for name in files[:20]:
    try:
      with open(os.path.join(folder, name), "rb") as f:
        head = f.read(132)
    except OSError:
      continue
    if head[128:132] == b"DICM":
      return True
  return False


def _dicom_series(folder: str) -> tuple[list[Source], str | None]:
  import SimpleITK as sitk

  try:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
  except RuntimeError as e:
    return [], f"DICOM files that form no readable series ({str(e).strip()[:120]})"
  if not series_ids:
    return [], "DICOM files that form no readable series"
  sources = []
  for series_id in series_ids:
    files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series_id))
    description = _series_description(files[0]) or series_id
    sources.append(Source(folder, _safe(description), files))
  return sources, None


def _series_description(path: str) -> str:
  import SimpleITK as sitk

  reader = sitk.ImageFileReader()
  reader.SetFileName(path)
  try:
    reader.ReadImageInformation()
    return reader.GetMetaData("0008|103e").strip() if reader.HasMetaDataKey("0008|103e") else ""
  except RuntimeError:
    return ""


def _bids(root: str, modality: str) -> list[Source]:
  pattern = re.compile(BIDS_SUFFIX.get(modality, "_" + re.escape(modality)) + r"\.nii(\.gz)?$")
  sources = []
  for subject in sorted(os.listdir(root)):
    subject_dir = os.path.join(root, subject)
    if not (subject.startswith("sub-") and os.path.isdir(subject_dir)):
      continue
    sessions = sorted(s for s in os.listdir(subject_dir) if s.startswith("ses-")) or [""]
    for session in sessions:
      anat = os.path.join(subject_dir, session, "anat")
      if not os.path.isdir(anat):
        continue
      for name in sorted(os.listdir(anat)):
        if pattern.search(name) and not (modality == "t1" and "_ce-" in name):
          sources.append(Source(os.path.join(anat, name), _safe(scan_stem(name)),
                                bids_folder=os.path.relpath(anat, root)))
  return sources


# Modality words in file names, as the public datasets spell them.
MODALITY_WORDS = {"flair": ("flair", "fla", "t2f"), "t1": ("t1", "t1w", "t1n"),
                  "t1c": ("t1c", "t1ce", "t1gd", "t1post"), "t2": ("t2", "t2w"),
                  "pd": ("pd", "pdw")}


def modality_of(source: Source) -> tuple[str, str] | None:
  """(modality, session key) from a file name's modality word, e.g. `case_t1c_bet` -> t1c."""
  words = re.split(r"[_.\-]", scan_stem(source.path))
  for i, word in enumerate(words):
    for modality, spellings in MODALITY_WORDS.items():
      if word.lower() in spellings:
        key = "_".join(words[:i] + ["*"] + words[i + 1:])
        return modality, os.path.join(os.path.dirname(source.path), key)
  return None


def sessions(found: list[Source], modalities: tuple[str, ...]):
  """({scan of the first modality: the session's other scans, in order}, {scan: problem})."""
  by_key: dict[str, dict[str, Source]] = {}
  for source in found:
    named = modality_of(source)
    if named:
      by_key.setdefault(named[1], {})[named[0]] = source
  grouped, problems = {}, {}
  for session in by_key.values():
    first = session.get(modalities[0])
    if first is None:
      continue
    missing = [m for m in modalities[1:] if m not in session]
    if missing:
      problems[first] = (f"{first.path}: no {', '.join(missing)} scan of this session beside it "
                         f"(names that differ only in the modality word, e.g. "
                         f"{MODALITY_WORDS[missing[0]][0]})")
    else:
      grouped[first] = tuple(session[m].path for m in modalities[1:])
  return grouped, problems


def bids_session_files(source: Source, modalities: tuple[str, ...]) -> list[str]:
  """The same BIDS session's images of `modalities` (matched by every entity but the suffix)."""
  anat = os.path.dirname(source.path)
  stem = scan_stem(source.path)
  base = re.sub(r"(_ce-[^_]+)?_[A-Za-z0-9]+$", "", stem)  # sub-X[_ses-Y][_acq-..]
  found = []
  for modality in modalities:
    pattern = re.compile(re.escape(base) + BIDS_SUFFIX[modality] + r"\.nii(\.gz)?$")
    matches = sorted(f for f in os.listdir(anat) if pattern.search(f)
                     and not (modality == "t1" and "_ce-" in f))
    if len(matches) != 1:
      raise InputFileError(source.path, f"{len(matches)} {modality} images of this session in "
                                        f"{anat} (needs exactly one)")
    found.append(os.path.join(anat, matches[0]))
  return found


@contextlib.contextmanager
def as_nifti(source: Source):
  """A NIfTI path for `source`: the file itself, or a conversion in a temporary folder."""
  if not source.dicom_files and source.path.endswith(NIFTI_SUFFIXES):
    yield source.path
    return
  import SimpleITK as sitk

  folder = tempfile.mkdtemp(prefix="brainseg_scan_")
  try:
    path = os.path.join(folder, f"{source.name}.nii.gz")
    with keeping_locale():
      try:
        if source.dicom_files:
          reader = sitk.ImageSeriesReader()
          reader.SetFileNames(list(source.dicom_files))
          image = reader.Execute()
        else:
          image = sitk.ReadImage(source.path)
      except RuntimeError as e:
        raise InputFileError(str(source), f"SimpleITK cannot read it "
                                          f"({str(e).strip().splitlines()[-1][:160]})") from None
      sitk.WriteImage(image, path)
    yield path
  finally:
    shutil.rmtree(folder, ignore_errors=True)
