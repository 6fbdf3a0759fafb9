"""The package builds as a wheel and an sdist that are complete and clean.

``python -m build`` (the ``build`` package, in the ``test`` extra) makes both;
``twine check --strict`` validates their metadata. The wheel's installation
into a fresh environment with only the core dependencies, at their declared
minimum versions, is ``.ci/min-versions`` (run by ``.ci/run``).
"""

import email.parser
import importlib.util
import pathlib
import subprocess
import sys
import tarfile
import zipfile

import pytest

import optax_profit

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Top-level folders that hold examples, results or data: never in the sdist.
NOT_SHIPPED = ("examples", "benchmarks", "notebooks", "docs", "tests", "results",
               "workdir", ".ci", ".venv")  # fmt: skip


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
  if importlib.util.find_spec("build") is None:
    pytest.skip("`build` is not installed (it comes with the [test] extra)")
  out = tmp_path_factory.mktemp("dist")
  proc = subprocess.run(
      [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
      capture_output=True, text=True, timeout=900, check=False,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  (wheel,) = out.glob("*.whl")
  (sdist,) = out.glob("*.tar.gz")
  return wheel, sdist


def test_twine_check_passes(dist):
  if importlib.util.find_spec("twine") is None:
    pytest.skip("`twine` is not installed (it comes with the [test] extra)")
  proc = subprocess.run(
      [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist)],
      capture_output=True, text=True, timeout=300, check=False,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sdist_has_the_sources_and_no_data(dist):
  _, sdist = dist
  with tarfile.open(sdist) as tar:
    names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
  modules = sorted(p.name for p in (ROOT / "optax_profit").glob("*.py"))
  shipped = sorted(n.removeprefix("optax_profit/") for n in names
                   if n.startswith("optax_profit/") and n.endswith(".py"))  # fmt: skip
  assert shipped == modules
  for needed in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md",
                 "PKG-INFO", "optax_profit/py.typed"):  # fmt: skip
    assert needed in names, needed
  stray = [n for n in names if n.split("/")[0] in NOT_SHIPPED]
  assert not stray, f"the sdist ships {stray[:10]}"
  assert not [n for n in names if n.endswith((".pyc", ".png", ".json", ".npz"))]


def test_wheel_metadata_is_complete(dist):
  wheel, _ = dist
  with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
    (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
  assert all(n.startswith(("optax_profit/", "optax_profit-")) for n in names), names
  assert "optax_profit/py.typed" in names
  assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
  # One version, single-sourced from optax_profit.__version__.
  assert meta["Version"] == optax_profit.__version__
  assert wheel.name.startswith(f"optax_profit-{optax_profit.__version__}-")
  assert meta["License-Expression"] == "Apache-2.0"
  requires = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
  tomllib = pytest.importorskip("tomllib")  # Python 3.11+
  declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  assert sorted(requires) == sorted(declared["dependencies"])
  assert {r.split(">=")[0] for r in requires} == {"jax", "optax", "chex"}
  classifiers = meta.get_all("Classifier")
  low = declared["requires-python"].removeprefix(">=")
  assert f"Programming Language :: Python :: {low}" in classifiers
  assert meta["Requires-Python"] == declared["requires-python"]
  urls = meta.get_all("Project-URL") or []
  assert urls and not any("OWNER" in u or "example" in u for u in urls), urls
  assert meta["Description-Content-Type"] == "text/markdown"


def test_changelog_has_the_current_version():
  text = (ROOT / "CHANGELOG.md").read_text()
  assert "keepachangelog.com" in text
  assert f"## [{optax_profit.__version__}]" in text
