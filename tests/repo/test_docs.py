"""The documentation site builds without warnings and covers the public API.

``sphinx-build -W`` turns every warning into an error: a broken link to a
local page or heading, a bad cross-reference, a docstring that does not
parse, a page missing from the toctree, a public name missing from
``docs/api.md`` (checked by ``docs/conf.py``). The build needs the ``docs``
extra (``pip install -e ".[test,docs]"``); without it that test is skipped.
"""

import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest

import optax_profit

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DOCS_DEPS = ("sphinx", "myst_nb", "sphinx_book_theme", "matplotlib")


def test_api_page_documents_every_public_name():
  text = (DOCS / "api.md").read_text()
  for name in optax_profit.__all__:
    assert f"   {name}\n" in text, f"{name} is not in the autosummary of api.md"
    assert f":: optax_profit.{name}\n" in text, f"{name} has no entry in api.md"


def test_every_page_is_reachable_from_a_toctree():
  pages = {
    p.relative_to(DOCS).with_suffix("").as_posix()
    for p in DOCS.rglob("*.md")
    if not p.relative_to(DOCS).parts[0].startswith("_")
  }
  listed = {"index"}
  for page in pages:
    text = (DOCS / f"{page}.md").read_text()
    for block in text.split("```{toctree}")[1:]:
      entries = block.split("```")[0].splitlines()
      parent = pathlib.PurePosixPath(page).parent
      listed |= {
        (parent / e.strip()).as_posix().removeprefix("./")
        for e in entries
        if e.strip() and not e.startswith(":")
      }
  assert pages <= listed, f"pages in no toctree: {sorted(pages - listed)}"


def test_cycle_diagram_is_drawn_from_a_real_cycle(tmp_path):
  pytest.importorskip("matplotlib")
  out = tmp_path / "cycle.png"
  proc = subprocess.run(
      [sys.executable, str(DOCS / "_scripts" / "cycle_diagram.py"), str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def needs_docs_deps():
  missing = [m for m in DOCS_DEPS if importlib.util.find_spec(m) is None]
  if missing:
    pytest.skip(
      f"the docs build needs {', '.join(missing)}: "
      'install the docs extra, pip install -e ".[test,docs]"'
    )


def sphinx_build(docs: pathlib.Path, out: pathlib.Path):
  """``sphinx-build -W`` of ``docs`` into ``out``; returns the process."""
  return subprocess.run(
    [
      sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
      "-d", str(out / "doctrees"), str(docs), str(out / "html"),
    ],
    cwd=docs.parent, capture_output=True, text=True, timeout=900, check=False,
  )  # fmt: skip


def test_docs_build_with_warnings_as_errors(tmp_path):
  needs_docs_deps()
  proc = sphinx_build(DOCS, tmp_path)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
  html = tmp_path / "html"
  api = (html / "api.html").read_text()
  for name in optax_profit.__all__:
    assert f'id="optax_profit.{name}"' in api, f"{name} not rendered in api.html"
  assert (html / "_images" / "cycle.png").exists()
  # The notebooks are rendered (from their stored cells, not executed).
  quickstart = (html / "notebooks" / "quickstart.html").read_text()
  assert "optax-profit quickstart" in quickstart and "optax_profit" in quickstart
  # Links from the included READMEs go to the pages that show their targets.
  cifar = (html / "examples" / "cifar.html").read_text()
  assert 'href="../notebooks/cifar_finetune.html"' in cifar


def test_docs_build_fails_on_a_broken_link_and_a_missing_api_entry(tmp_path):
  """The same build on a copy with two faults: both are reported, it fails."""
  needs_docs_deps()
  copy = tmp_path / "repo"
  skip = shutil.ignore_patterns("__pycache__", "_build", "_generated", "results")
  for name in ("docs", "optax_profit", "examples", "benchmarks", "notebooks"):
    shutil.copytree(ROOT / name, copy / name, ignore=skip)
  for name in ("README.md", "CHANGELOG.md"):
    shutil.copy(ROOT / name, copy / name)
  index = copy / "docs" / "index.md"
  index.write_text(index.read_text() + "\nSee [this page](no_such_page.md).\n")
  api = copy / "docs" / "api.md"
  text = api.read_text().replace("   profit_spec\n", "")
  api.write_text(text.replace(".. autofunction:: optax_profit.profit_spec\n", ""))
  proc = sphinx_build(copy / "docs", tmp_path / "out")
  assert proc.returncode != 0
  assert "no_such_page" in proc.stderr, proc.stderr[-4000:]
  assert "profit_spec" in proc.stderr, proc.stderr[-4000:]
