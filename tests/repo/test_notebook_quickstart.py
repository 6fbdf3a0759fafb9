"""Executes notebooks/quickstart.ipynb top to bottom; any cell error fails."""

import json
import sys

from tests.repo import _notebooks

NOTEBOOK = _notebooks.ROOT / "notebooks" / "quickstart.ipynb"


def test_notebook_is_stored_without_outputs():
  _notebooks.assert_stored_without_outputs(NOTEBOOK)


def test_first_code_cell_installs_the_package_in_colab(tmp_path, monkeypatch):
  first = _notebooks.code_cells(NOTEBOOK)[0].source
  assert "google.colab" in first
  assert "optax-profit[examples] @ git+{REPO_URL}" in first
  # In Colab: README's `pip install "optax-profit @ git+<this repository>"`
  # with the examples extra, then a clone of the same repository for the
  # examples, which the repository root on sys.path makes importable.
  ns, calls = _notebooks.run_install_cell(NOTEBOOK, monkeypatch, tmp_path, True)
  assert ns["IN_COLAB"] and len(calls) == 2, calls
  _notebooks.assert_installs_this_package_as_the_readme_says(
    calls[0], ns["REPO_URL"], {"examples"}
  )
  assert calls[1] == ["git", "clone", "-q", "--depth", "1", ns["REPO_URL"]]
  assert ns["ROOT"] == tmp_path.resolve() / "optax-profit"
  assert sys.path[0] == str(ns["ROOT"])
  # In a checkout: nothing installed, the checkout's root on sys.path.
  ns, calls = _notebooks.run_install_cell(NOTEBOOK, monkeypatch, NOTEBOOK.parent, False)
  assert not ns["IN_COLAB"] and calls == []
  assert ns["ROOT"] == _notebooks.ROOT and str(_notebooks.ROOT) in sys.path


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  # Every cell at the notebook's tiny size (seconds, not minutes), in a fresh
  # folder: no cached base models from an earlier execution, and the results
  # of a real run under results/quickstart are left alone.
  monkeypatch.setenv("QUICKSTART_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("QUICKSTART_NOTEBOOK_WORKDIR", str(tmp_path))
  outputs = _notebooks.execute(NOTEBOOK, timeout=600)
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "PROFIT" in text and "original (paper)" in text
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) == 3
  results = json.loads((tmp_path / "results.json").read_text())
  assert {row["row"] for row in results["table"]} == {
    "baseline",
    "full",
    "head",
    "profit_cycles",
    "profit_batches",
  }
