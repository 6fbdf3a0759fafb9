"""Sphinx configuration of the optax-profit documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (what
``tests/repo/test_docs.py`` runs). Notebooks are rendered from their stored cells,
never executed here: the test suite executes them.
"""

import os
import pathlib
import re
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

exclude_patterns = ["_build", "_scripts", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}

# MyST: $...$ math, ::: fences, and a warning (an error under -W) for every link
# to a local page or heading that does not exist.
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# Notebooks are shown as stored: executing them needs data and minutes.
nb_execution_mode = "off"

autodoc_default_options = {"show-inheritance": False}
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


def _copy_notebooks(app) -> None:
  """Copies ../notebooks/*.ipynb into docs/notebooks/ (a copy, not a symlink:
  MyST resolves links by real path, and the pages must live under docs/)."""
  out = DOCS / "notebooks"
  out.mkdir(exist_ok=True)
  for nb in (ROOT / "notebooks").glob("*.ipynb"):
    target = out / nb.name
    if not target.exists() or target.read_bytes() != nb.read_bytes():
      target.write_bytes(nb.read_bytes())


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


# Repository files that the site shows as pages: a link to one of them from an
# included README goes to its page.
_PAGE_OF = {
  "README.md": "index.md",
  "CHANGELOG.md": "changelog.md",
  "benchmarks/RESULTS.md": "performance.md",
  "benchmarks/README.md": "performance.md",
}
_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")


def _page_of(rel: str) -> str | None:
  """The docs page that shows repository file ``rel``, if any."""
  if rel.startswith("docs/"):
    return rel.removeprefix("docs/")
  parts = rel.split("/")
  if len(parts) == 3 and parts[0] == "examples" and parts[2] == "README.md":
    return f"examples/{parts[1]}.md"
  if len(parts) == 2 and parts[0] == "notebooks" and rel.endswith(".ipynb"):
    return rel
  return _PAGE_OF.get(rel)


def _relink(text: str, source: pathlib.Path) -> str:
  """Rewrites the relative links of a file included from outside docs/.

  A link to a repository file the site shows becomes a link to its page
  (absolute from the docs root); a link to another existing file or folder
  becomes its text and path; a link to nothing is left as it is, so that
  Sphinx reports it (an error under -W).
  """

  def fix(match: re.Match) -> str:
    label, target = match.groups()
    if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
      return match.group(0)
    path, _, anchor = target.partition("#")
    resolved = pathlib.Path(os.path.normpath(source.parent / path))
    try:
      rel = resolved.relative_to(ROOT).as_posix()
    except ValueError:
      return match.group(0)
    page = _page_of(rel)
    if page is not None:
      return f"[{label}](/{page}{'#' + anchor if anchor else ''})"
    if resolved.exists():
      return label if rel.split("/")[-1] in label else f"{label} (`{rel}`)"
    return match.group(0)

  out, fenced = [], False
  for line in text.splitlines(keepends=True):
    if line.lstrip().startswith(("```", "~~~")):
      fenced = not fenced
    out.append(line if fenced else _LINK.sub(fix, line))
  return "".join(out)


def _relink_includes(app, relative_path, parent_docname, content) -> None:
  """``include-read``: fix the links of the READMEs that pages include."""
  source = pathlib.Path(os.path.normpath(DOCS / relative_path))
  if DOCS not in source.parents:
    content[0] = _relink(content[0], source)


def setup(app):
  app.connect("include-read", _relink_includes)
  app.connect("config-inited", lambda app, config: _copy_notebooks(app))
  app.connect("builder-inited", _draw_figures)
  app.connect("builder-inited", _check_api_page)
