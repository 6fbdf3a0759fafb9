"""Reading and executing the repository's notebooks in tests."""

import importlib.machinery
import importlib.util
import pathlib
import re
import subprocess
import sys
import tomllib
import types
import urllib.parse
from typing import Any

import nbclient
import nbformat
import packaging.requirements

ROOT = pathlib.Path(__file__).resolve().parents[2]


def code_cells(path: pathlib.Path) -> list[Any]:
  """The code cells of the notebook at ``path``."""
  notebook = nbformat.read(path, as_version=4)
  return [c for c in notebook.cells if c.cell_type == "code"]


def assert_stored_without_outputs(path: pathlib.Path) -> None:
  """The notebook is valid and committed without outputs or counts."""
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  for cell in notebook.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None


def execute(path: pathlib.Path, timeout: int) -> list[dict[str, Any]]:
  """Runs the notebook top to bottom with its folder as working directory.

  Args:
    path: the notebook.
    timeout: seconds allowed per cell.

  Returns:
    The outputs of every code cell, in order.

  Raises:
    nbclient.exceptions.CellExecutionError: on the first failing cell.
  """
  notebook = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
    notebook,
    kernel_name="python3",  # ipykernel's kernel of the running interpreter
    timeout=timeout,
    resources={"metadata": {"path": str(path.parent)}},
  )
  client.execute()
  return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]


def run_install_cell(
  path: pathlib.Path, monkeypatch: Any, workdir: pathlib.Path, in_colab: bool
) -> tuple[dict[str, Any], list[list[str]]]:
  """Runs the notebook's first code cell as in Colab (or not), recording commands.

  ``google.colab`` is made importable (or not) and ``subprocess.run`` records
  its commands instead of running them; the cell runs in ``workdir``.

  Returns:
    The cell's global namespace and the commands it ran, in order.
  """
  calls = []

  def record(cmd, *args, **kwargs):
    calls.append(list(cmd))
    return subprocess.CompletedProcess(cmd, 0)

  monkeypatch.setattr(subprocess, "run", record)
  monkeypatch.setattr(sys, "path", list(sys.path))
  if in_colab:
    colab = types.ModuleType("google.colab")
    colab.__spec__ = importlib.machinery.ModuleSpec("google.colab", None)
    if importlib.util.find_spec("google") is None:
      google = types.ModuleType("google")
      google.__path__ = []
      monkeypatch.setitem(sys.modules, "google", google)
    else:
      importlib.import_module("google")
    monkeypatch.setitem(sys.modules, "google.colab", colab)
  else:
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
  monkeypatch.chdir(workdir)
  namespace = {"__name__": "__main__"}
  exec(code_cells(path)[0].source, namespace)
  return namespace, calls


def readme_install_requirement() -> str:
  """The requirement README's Install section gives to pip, `<this repository>`
  left in: ``optax-profit @ git+<this repository>``."""
  readme = (ROOT / "README.md").read_text()
  section = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
  match = re.search(r'pip install "([^"]+)"', section)
  assert match, section
  return match.group(1)


def assert_installs_this_package_as_the_readme_says(
  install: list[str], repo_url: str, extras: set[str]
) -> None:
  """``install`` is ``pip install`` of README's requirement, from ``repo_url``,
  with ``extras`` (extras of this package's pyproject.toml)."""
  assert install[:4] == [sys.executable, "-m", "pip", "install"], install
  requirement = packaging.requirements.Requirement(install[-1])
  readme = readme_install_requirement()
  assert "<this repository>" in readme, readme
  readme = packaging.requirements.Requirement(
    readme.replace("<this repository>", repo_url)
  )
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  assert requirement.name == readme.name == project["name"], requirement
  assert requirement.url == readme.url == f"git+{repo_url}", requirement
  assert requirement.extras == readme.extras | extras, requirement
  assert extras <= project["optional-dependencies"].keys()
  url = urllib.parse.urlparse(repo_url)
  assert url.scheme == "https" and url.netloc and url.path.strip("/"), repo_url
