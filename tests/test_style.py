"""Repository hygiene: ruff is clean and the docstring examples run."""

import doctest
import importlib
import pathlib
import pkgutil
import shutil
import subprocess
import sys

import pytest

import optax_profit

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _ruff() -> str:
  beside_python = pathlib.Path(sys.executable).with_name("ruff")
  ruff = str(beside_python) if beside_python.exists() else shutil.which("ruff")
  if ruff is None:
    pytest.skip("ruff is not installed (it comes with the [test] extra)")
  return ruff


def test_ruff_is_clean():
  ruff = _ruff()
  result = subprocess.run(
    [ruff, "check", str(ROOT)], capture_output=True, text=True, check=False
  )
  assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
  """The whole tree (notebooks included) is `ruff format`ted, 2-space indents."""
  ruff = _ruff()
  result = subprocess.run(
    [ruff, "format", "--check", str(ROOT)], capture_output=True, text=True, check=False
  )
  assert result.returncode == 0, result.stdout + result.stderr


MODULES = ["optax_profit"] + [
  f"optax_profit.{m.name}" for m in pkgutil.iter_modules(optax_profit.__path__)
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
  result = doctest.testmod(
    importlib.import_module(module), optionflags=doctest.ELLIPSIS
  )
  assert result.failed == 0


def test_ci_runs_the_readme_test_command():
  readme = (ROOT / "README.md").read_text()
  ci = (ROOT / ".ci" / "run").read_text()
  assert readme.count("<!-- test-command -->") == 1
  assert "<!-- test-command -->" in ci
