"""Executes notebooks/quickstart.ipynb top to bottom; any cell error fails."""

import json
import shutil

from tests import _notebooks

NOTEBOOK = _notebooks.ROOT / "notebooks" / "quickstart.ipynb"
WORKDIR = _notebooks.ROOT / "results" / "quickstart"


def test_notebook_is_stored_without_outputs():
  _notebooks.assert_stored_without_outputs(NOTEBOOK)


def test_first_code_cell_installs_the_package_in_colab():
  first = _notebooks.code_cells(NOTEBOOK)[0].source
  assert "google.colab" in first
  assert "optax-profit[examples] @ git+{REPO_URL}" in first
  assert 'REPO_URL = "https://github.com/OWNER/optax-profit"' in first


def test_notebook_runs_top_to_bottom():
  # A fresh run: no cached base models from an earlier execution.
  shutil.rmtree(WORKDIR, ignore_errors=True)
  outputs = _notebooks.execute(NOTEBOOK, timeout=600)
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "PROFIT" in text and "original (paper)" in text
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) == 3
  results = json.loads((WORKDIR / "results.json").read_text())
  assert {row["row"] for row in results["table"]} == {
    "baseline",
    "full",
    "head",
    "profit_cycles",
    "profit_batches",
  }
