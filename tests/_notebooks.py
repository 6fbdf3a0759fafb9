"""Reading and executing the repository's notebooks in tests."""

import pathlib
from typing import Any

import nbclient
import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]


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
