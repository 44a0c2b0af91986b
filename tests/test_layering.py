"""The layers of the code: commands over the engine, the library apart from the experiments.

  entries    launch.py (from a checkout) and brainseg_jax/console.py (installed) start commands
  commands   brainseg_jax/{launch,eval,predict,calibrate,compare,build,export,sample}.py:
             flags and a call
             into the engine; none imports another, and the engine imports none
  engine     the rest of brainseg_jax/: never imports configs/ (the experiment files), so
             an installed library works without the repository root on sys.path
  data_prep  preprocessing of scans: imports nothing from brainseg_jax
"""

import ast
import pathlib

import pytest

from tests.helpers import PROJECT_ROOT

COMMANDS = {"brainseg_jax.launch", "brainseg_jax.eval", "brainseg_jax.predict",
            "brainseg_jax.calibrate", "brainseg_jax.compare", "brainseg_jax.build",
            "brainseg_jax.export", "brainseg_jax.sample"}
ENTRIES = {"launch", "brainseg_jax.console"}


def _module(path: pathlib.Path) -> str:
  return ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(
      ".__init__")


def _imports(path: pathlib.Path) -> set[str]:
  """Every module `path` imports, anywhere in it (`from a import b` counts as a and a.b)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.add(node.module)
      found.update(f"{node.module}.{alias.name}" for alias in node.names)
  return found


def _files(folder: str) -> list[pathlib.Path]:
  return sorted((PROJECT_ROOT / folder).rglob("*.py"))


def test_the_rules_see_every_command():
  modules = {_module(p) for p in [*_files("brainseg_jax"), PROJECT_ROOT / "launch.py"]}
  assert modules >= COMMANDS | ENTRIES
  assert any("configs" in _imports(p) or "configs.vae" in _imports(p)
             for p in _files("tests"))  # the parser sees such an import where there is one


@pytest.mark.parametrize("path", [p for p in _files("brainseg_jax") if _module(p) not in ENTRIES],
                         ids=_module)
def test_no_command_imports_another(path):
  others = COMMANDS - {_module(path)}
  assert not _imports(path) & others, f"{_module(path)} imports {_imports(path) & others}"


@pytest.mark.parametrize("path", _files("brainseg_jax"), ids=_module)
def test_the_library_never_imports_the_experiment_files(path):
  imported = {name for name in _imports(path) if name == "configs" or name.startswith("configs.")}
  assert not imported, f"{_module(path)} imports {imported}"


@pytest.mark.parametrize("path", _files("data_prep"), ids=_module)
def test_data_prep_imports_nothing_from_brainseg_jax(path):
  imported = {name for name in _imports(path) if name.split(".")[0] == "brainseg_jax"}
  assert not imported, f"{_module(path)} imports {imported}"
