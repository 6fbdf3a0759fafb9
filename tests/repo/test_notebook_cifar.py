"""Executes notebooks/cifar_finetune.ipynb top to bottom on mock data."""

import sys

from tests.repo import _notebooks

NOTEBOOK = _notebooks.ROOT / "notebooks" / "cifar_finetune.ipynb"


def test_notebook_is_stored_without_outputs():
  _notebooks.assert_stored_without_outputs(NOTEBOOK)


def test_first_code_cell_installs_the_package_only_in_colab(tmp_path, monkeypatch):
  first = _notebooks.code_cells(NOTEBOOK)[0].source
  assert 'find_spec("google.colab")' in first
  assert "optax-profit[examples] @ git+{REPO}" in first
  assert first.index("if IN_COLAB:") < first.index('"install"')
  # In Colab: README's `pip install "optax-profit @ git+<this repository>"`
  # with the examples extra, then a clone of the same repository (the
  # examples are not in the wheel), put on sys.path.
  ns, calls = _notebooks.run_install_cell(NOTEBOOK, monkeypatch, tmp_path, True)
  assert ns["IN_COLAB"] and len(calls) == 2, calls
  _notebooks.assert_installs_this_package_as_the_readme_says(
    calls[0], ns["REPO"], {"examples"}
  )
  assert calls[1] == ["git", "clone", "-q", "--depth", "1", ns["REPO"]]
  assert sys.path[0] == str(tmp_path / "optax-profit")
  # In a checkout: nothing installed, the checkout's root on sys.path.
  ns, calls = _notebooks.run_install_cell(NOTEBOOK, monkeypatch, NOTEBOOK.parent, False)
  assert not ns["IN_COLAB"] and calls == []
  assert sys.path[0] == str(_notebooks.ROOT)


def test_notebook_runs_top_to_bottom_on_mock_data(tmp_path, monkeypatch):
  monkeypatch.setenv("CIFAR_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("CIFAR_NOTEBOOK_WORKDIR", str(tmp_path))
  outputs = _notebooks.execute(NOTEBOOK, timeout=300)
  markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
  assert "| Adam |" in markdown and "| PROFIT |" in markdown
  assert any("image/png" in o.get("data", {}) for o in outputs)
  assert (tmp_path / "notebook_curves.png").exists()
  assert len(list((tmp_path / "finetune").iterdir())) == 2
  assert list((tmp_path / "pretrain").iterdir())
