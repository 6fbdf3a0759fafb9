"""Executes notebooks/cifar_finetune.ipynb top to bottom on mock data."""

from tests import _notebooks

NOTEBOOK = _notebooks.ROOT / "notebooks" / "cifar_finetune.ipynb"


def test_notebook_is_stored_without_outputs():
  _notebooks.assert_stored_without_outputs(NOTEBOOK)


def test_first_code_cell_installs_the_package_only_in_colab():
  first = _notebooks.code_cells(NOTEBOOK)[0].source
  assert 'find_spec("google.colab")' in first
  assert "optax-profit[examples] @ git+{REPO}" in first
  assert 'REPO = "https://github.com/OWNER/optax-profit"' in first
  assert first.index("if IN_COLAB:") < first.index('"install"')


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
