"""The README stays a short user guide, and it and docs/ point only at what exists.

Checked: its length; the results table first (before the contents and the set-up); headings
that never skip a level (README and docs/); the Layout section against the repository (every
module listed, every listed path present); every relative link and anchor in README.md and
docs/*.md; every docs page reachable from the README; the headline and small-lesion tables' numbers
against the results pages they come from, and the Speed section's against the benchmark pages.
"""

import collections
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_LINES = 300
# Folders whose every module the Layout section must list (recursively), and single files.
LISTED_FOLDERS = ("brainseg_jax", "data_prep", "configs", "bench")
LISTED_FILES = ("launch.py",)
# The first table's source: each of its rows names a config (`name:variant`) of this page.
HEADLINE_SOURCE = DOCS / "results_lgg.md"
# The small-lesion table's source: each of its rows names a run (`unet_64`) of this page.
SMALL_LESIONS_SOURCE = DOCS / "results_small_lesions.md"

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"`[^`]*`")
# A Layout line: indentation (2 spaces a level), one or more names separated by ", ", then at
# least two spaces and what they are. A name ending in "/" is a folder: deeper lines are in it.
_LAYOUT_LINE = re.compile(
    r"^(?P<indent> *)(?P<names>[\w.\-]+/?(?:, [\w.\-]+/?)*) {2,}(?P<what>\S.*)$")


def _pages() -> list[pathlib.Path]:
  return [README, *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> list[tuple[int, str]]:
  """(line number, line) outside fenced code blocks."""
  lines, fenced = [], False
  for number, line in enumerate(text.splitlines(), 1):
    if _FENCE.match(line):
      fenced = not fenced
      continue
    if not fenced:
      lines.append((number, line))
  return lines


def _headings(path: pathlib.Path) -> list[tuple[int, int, str]]:
  """(line number, level, text) of each Markdown heading."""
  found = []
  for number, line in _prose(path.read_text()):
    match = _HEADING.match(line)
    if match:
      found.append((number, len(match.group(1)), match.group(2)))
  return found


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, code marks and punctuation dropped, spaces -> -."""
  text = re.sub(r"[`*_]{2,}|`", "", heading).lower()
  text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text stays
  return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def _anchors(path: pathlib.Path) -> set[str]:
  seen = collections.Counter()
  anchors = set()
  for _, _, text in _headings(path):
    slug = _slug(text)
    anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
    seen[slug] += 1
  return anchors


def _links(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line number, target) of each Markdown link and image outside code."""
  found = []
  for number, line in _prose(path.read_text()):
    for match in _LINK.finditer(_INLINE_CODE.sub("", line)):
      found.append((number, match.group(1)))
  return found


def _is_relative(target: str) -> bool:
  return not re.match(r"^[a-z][a-z0-9+.\-]*:", target, re.IGNORECASE)


def layout_entries() -> dict[str, int]:
  """Path -> README line number of every entry of the Layout section's tree."""
  lines = README.read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.strip() == "## Layout")
  fence = next(i for i in range(start, len(lines)) if _FENCE.match(lines[i]))
  entries, folders = {}, []  # folders: the enclosing folder at each depth
  for i in range(fence + 1, len(lines)):
    line = lines[i]
    if _FENCE.match(line):
      break
    if not line.strip():
      continue
    match = _LAYOUT_LINE.match(line)
    assert match, f"README.md:{i + 1}: not a Layout line (`names  what they are`): {line!r}"
    indent = len(match["indent"])
    assert indent % 2 == 0 and indent // 2 <= len(folders), (
        f"README.md:{i + 1}: indent by 2 spaces per folder level: {line!r}")
    depth = indent // 2
    del folders[depth:]
    names = match["names"].split(", ")
    for name in names:
      path = "/".join([*folders, name.rstrip("/")])
      assert path not in entries, f"README.md:{i + 1}: {path} listed twice"
      entries[path] = i + 1
    if len(names) == 1 and names[0].endswith("/"):
      folders.append(names[0].rstrip("/"))
  return entries


def test_readme_is_short():
  lines = README.read_text().splitlines()
  assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_first_table_is_the_comparison_with_thresholding():
  prose = _prose(README.read_text())
  first_table = next(i for i, (_, line) in enumerate(prose) if line.lstrip().startswith("|"))
  table = []
  for _, line in prose[first_table:]:
    if not line.lstrip().startswith("|"):
      break
    table.append(line)
  assert "threshold" in "\n".join(table).lower()
  heading_lines = {text.lower(): number for number, _, text in _headings(README)}
  table_line = prose[first_table][0]
  for title in ("contents", "set-up: three commands"):
    assert title in heading_lines, f"README.md has no '## {title}' heading"
    assert table_line < heading_lines[title], f"the first table must come before '{title}'"


def test_headline_numbers_are_those_of_the_results_page():
  source = {}
  for line in HEADLINE_SOURCE.read_text().splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if line.startswith("|") and ":" in cells[0]:
      source[cells[0]] = set(cells)
  prose = _prose(README.read_text())
  first = next(i for i, (_, line) in enumerate(prose) if line.lstrip().startswith("|"))
  rows = 0
  for number, line in prose[first:]:
    if not line.lstrip().startswith("|"):
      break
    config = re.search(r"`([\w]+:[\w]+)`", line)
    if not config:
      continue
    rows += 1
    assert config[1] in source, f"README.md:{number}: {config[1]} is not in {HEADLINE_SOURCE.name}"
    for cell in line.strip().strip("|").split("|")[1:]:
      value = cell.strip().strip("*")
      assert value in source[config[1]], (
          f"README.md:{number}: {value} is not in {HEADLINE_SOURCE.name}'s {config[1]} row")
  assert rows == len(source), f"every model of {HEADLINE_SOURCE.name} has a row"


def test_small_lesion_numbers_are_those_of_their_results_page():
  source = collections.defaultdict(set)
  for line in SMALL_LESIONS_SOURCE.read_text().splitlines():
    run = re.search(r"\(?`(\w+)`\)? \|", line)
    if line.startswith("|") and run:
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      source[run[1]].update(part.strip() for cell in cells for part in cell.split("/"))
  text = README.read_text()
  table = text[text.index("**Small lesions"):].split("\n\n")[1].splitlines()
  rows = [line for line in table if re.search(r"\(`\w+`\)", line)]
  assert len(rows) >= 2, "the small-lesion table names its runs, (`unet_64`)"
  for line in rows:
    run = re.search(r"\(`(\w+)`\)", line)[1]
    assert run in source, f"README.md: {run} is not in {SMALL_LESIONS_SOURCE.name}"
    for cell in line.strip().strip("|").split("|")[1:]:
      value = cell.strip().strip("*")
      assert value in source[run], (
          f"README.md: {value} is not in {SMALL_LESIONS_SOURCE.name}'s {run} rows")


def _section(text: str, heading: str) -> str:
  start = text.index(f"\n## {heading}\n")
  end = text.find("\n## ", start + 1)
  return text[start:end if end > 0 else None]


def test_speed_numbers_are_those_of_the_benchmark_pages():
  """The preprocessing time and every JAX / PyTorch ratio the README states, as measured."""
  speed = _section(README.read_text(), "Speed")
  data_page = (DOCS / "benchmarks_data.md").read_text()
  seconds = re.search(r"^preprocessing of a 1 mm volume: \*\*(\d+\.\d) s\*\*", data_page, re.M)
  assert seconds, "benchmarks_data.md states the 1 mm volume's time in its fixed line"
  assert f"**{seconds[1]} s**" in speed, f"README Speed: the 1 mm volume takes {seconds[1]} s"
  table = _section((DOCS / "benchmarks.md").read_text(), "Training throughput").splitlines()
  header = next(i for i, line in enumerate(table) if line.startswith("| model"))
  columns = [c.strip() for c in table[header].strip("|").split("|")]
  for line in table[header + 2:]:
    if not line.startswith("|"):
      break
    cells = dict(zip(columns, (c.strip().strip("*") for c in line.strip("|").split("|")),
                     strict=True))
    for column in ("JAX / PyTorch", "JAX / compiled"):
      assert cells[column] in speed, (
          f"README Speed: {cells['model']}'s {column} of benchmarks.md is {cells[column]}")


@pytest.mark.parametrize("path", _pages(), ids=lambda p: p.name)
def test_headings_never_skip_a_level(path):
  """Each heading is at most one level below the one before (the first sets the start)."""
  headings = _headings(path)
  if path == README:
    assert headings and headings[0][1] == 1, "README.md starts with its # title"
  for (_, before, _), (number, level, text) in zip(headings, headings[1:], strict=False):
    assert level <= before + 1, (
        f"{path.name}:{number}: '{text}' is level {level} right after a level {before} heading")


def test_layout_lists_every_module():
  entries = layout_entries()
  modules = {str(p.relative_to(ROOT)) for folder in LISTED_FOLDERS
             for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts}
  modules |= set(LISTED_FILES)
  missing = sorted(modules - set(entries))
  assert not missing, f"README.md's Layout does not list: {missing}"


def test_layout_names_only_what_exists():
  absent = sorted(f"{path} (README.md:{line})" for path, line in layout_entries().items()
                  if not (ROOT / path).exists())
  assert not absent, f"README.md's Layout names paths that do not exist: {absent}"


@pytest.mark.parametrize("path", _pages(), ids=lambda p: p.name)
def test_relative_links_point_at_existing_files(path):
  broken = []
  for number, target in _links(path):
    if not _is_relative(target):
      continue
    file, _, anchor = target.partition("#")
    linked = (path.parent / file).resolve() if file else path
    if not linked.exists():
      broken.append(f"{path.name}:{number}: {target} (no such file)")
    elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
      broken.append(f"{path.name}:{number}: {target} (no such heading)")
  assert not broken, "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
  reached, todo = {README.resolve()}, [README]
  while todo:
    page = todo.pop()
    for _, target in _links(page):
      file = target.partition("#")[0]
      if not file or not _is_relative(target):
        continue
      linked = (page.parent / file).resolve()
      if linked.exists() and linked not in reached:
        reached.add(linked)
        if linked.suffix == ".md":
          todo.append(linked)
  orphans = sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*")
                   if p.suffix in (".md", ".png") and p.resolve() not in reached)
  assert not orphans, f"no link leads from README.md to: {orphans}"


def test_build_command_is_documented_where_it_lives():
  for path in _pages():
    assert "data_prep.build" not in path.read_text(), (
        f"{path.name}: the build command is `python -m brainseg_jax.build`")
