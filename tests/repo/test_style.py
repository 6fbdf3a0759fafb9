"""Repository hygiene: ruff is clean and the docstring examples run."""

import doctest
import importlib
import json
import os
import pathlib
import pkgutil
import re
import shutil
import subprocess
import sys

import pytest

import optax_profit

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _ruff() -> str:
  beside_python = pathlib.Path(sys.executable).with_name("ruff")
  ruff = str(beside_python) if beside_python.exists() else shutil.which("ruff")
  if ruff is None:
    pytest.skip("ruff is not installed (it comes with the [test] extra)")
  return ruff


def test_ruff_is_clean():
  ruff = _ruff()
  result = subprocess.run(
    [ruff, "check", str(ROOT)], capture_output=True, text=True, check=False
  )
  assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
  """The whole tree (notebooks included) is `ruff format`ted, 2-space indents."""
  ruff = _ruff()
  result = subprocess.run(
    [ruff, "format", "--check", str(ROOT)], capture_output=True, text=True, check=False
  )
  assert result.returncode == 0, result.stdout + result.stderr


MODULES = ["optax_profit"] + [
  f"optax_profit.{m.name}" for m in pkgutil.iter_modules(optax_profit.__path__)
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
  result = doctest.testmod(
    importlib.import_module(module), optionflags=doctest.ELLIPSIS
  )
  assert result.failed == 0


def _readme_test_command(readme: str) -> str:
  """The ```bash block between README's test-command markers, parsed here."""
  block = readme.split("<!-- test-command -->", 1)[1]
  block = block.split("<!-- /test-command -->", 1)[0]
  match = re.fullmatch(r"\s*```bash\n(.*?)\n```\s*", block, re.S)
  assert match, f"no bash block between the test-command markers: {block!r}"
  return match.group(1)


def test_ci_runs_the_readme_test_command(tmp_path):
  """`.ci/run` runs exactly the README's test command, then min-versions.

  `.ci/run` runs on a copy of itself and README.md, with a stand-in `bash` first
  on PATH that records its arguments instead of running them.
  """
  readme = (ROOT / "README.md").read_text()
  assert readme.count("<!-- test-command -->") == 1
  assert "<!-- test-command -->" in (ROOT / ".ci" / "run").read_text()
  command = _readme_test_command(readme)
  # The whole suite (no file or -k selection), optionally in worker processes.
  assert re.search(r"&& python -m pytest(?: -n \d+ --dist loadfile)?$", command), (
    command
  )
  (tmp_path / ".ci").mkdir()
  shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
  stand_in = tmp_path / "bin" / "bash"
  stand_in.parent.mkdir()
  stand_in.write_text(
    f"#!{sys.executable}\n"
    "import json, os, sys\n"
    "with open(os.environ['BASH_CALLS'], 'a') as f:\n"
    "  f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
  )
  stand_in.chmod(0o755)
  calls = tmp_path / "calls.jsonl"
  env = dict(os.environ, BASH_CALLS=str(calls))
  env["PATH"] = f"{stand_in.parent}{os.pathsep}{env['PATH']}"
  real_bash = shutil.which("bash")
  assert real_bash is not None

  def run_ci(readme_text: str) -> tuple[subprocess.CompletedProcess, list]:
    (tmp_path / "README.md").write_text(readme_text)
    calls.unlink(missing_ok=True)
    result = subprocess.run(
      [real_bash, str(tmp_path / ".ci" / "run")],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    ran = calls.read_text().splitlines() if calls.exists() else []
    return result, [json.loads(line) for line in ran]

  result, ran = run_ci(readme)
  assert result.returncode == 0, result.stdout + result.stderr
  assert ran == [["-euo", "pipefail", "-c", command], [".ci/min-versions"]], ran
  assert f"+ {command}\n" in result.stdout
  # The README decides: another command there is what CI runs, and a README
  # without the markers stops CI before it runs anything.
  other = command.replace(
    "python -m pytest", "python -m pytest -x tests/repo/test_style.py"
  )
  result, ran = run_ci(readme.replace(command, other))
  assert result.returncode == 0, result.stdout + result.stderr
  assert ran[0] == ["-euo", "pipefail", "-c", other], ran
  result, ran = run_ci(readme.replace("<!-- test-command -->", ""))
  assert result.returncode == 2 and ran == [], result.stdout + result.stderr
