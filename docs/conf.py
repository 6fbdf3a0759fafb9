"""Sphinx configuration of the optax-profit documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (what
``tests/test_docs.py`` runs). Notebooks are rendered from their stored cells,
never executed here: the test suite executes them.
"""

import pathlib
import runpy
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import optax_profit  # noqa: E402

project = "optax-profit"
author = "optax-profit developers"
copyright = "2026, optax-profit developers"
release = optax_profit.__version__
version = release

extensions = [
  "myst_nb",
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "_scripts", "**.ipynb_checkpoints", "README.md"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}

# MyST: $...$ math, ::: fences, and a warning (an error under -W) for every link
# to a local page or heading that does not exist.
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# Notebooks are shown as stored: executing them needs data and minutes.
nb_execution_mode = "off"

autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "sphinx_book_theme"
html_title = "optax-profit"
html_static_path = []
html_theme_options = {
  "show_toc_level": 2,
  "home_page_in_toc": True,
}


def _draw_figures(app) -> None:
  """Draws the figures made by scripts (the cycle diagram) before reading."""
  out = DOCS / "_generated" / "cycle.png"
  script = DOCS / "_scripts" / "cycle_diagram.py"
  if not out.exists() or out.stat().st_mtime < script.stat().st_mtime:
    runpy.run_path(str(script), run_name="cycle_diagram")["draw"](out)


def _check_api_page(app) -> None:
  """Warns (an error under -W) when a public name is missing from api.md."""
  from sphinx.util import logging

  text = (DOCS / "api.md").read_text()
  missing = [n for n in optax_profit.__all__ if f"optax_profit.{n}\n" not in text]
  if missing:
    logging.getLogger(__name__).warning(
      "api.md does not document these public names: %s", ", ".join(missing)
    )


def setup(app):
  app.connect("builder-inited", _draw_figures)
  app.connect("builder-inited", _check_api_page)
