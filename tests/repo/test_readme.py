"""The README's Python snippets run as written.

The snippet is taken from README.md (the first ``python`` block after a
heading, or in the file) and executed after a small preamble that defines what
it leaves to the reader (``params``, ``loss_fn``, ``batches``). The recipes
that used to live in the README (head-only, sharded training, checkpointing)
are pages of the docs now, run by ``tests/repo/test_recipes.py``.
"""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]


def snippet(heading: str | None) -> str:
  """The first ```python block after ``heading`` (or in the file)."""
  text = (ROOT / "README.md").read_text()
  if heading is not None:
    text = text[text.index(f"\n## {heading}\n") :]
  match = re.search(r"```python\n(.*?)```", text, re.S)
  assert match, f"no python block after {heading!r}"
  return match.group(1)


PREAMBLE = """
import jax, jax.numpy as jnp, numpy as np, optax, optax_profit

def loss_fn(p, batch):
    return jnp.mean((batch["x"] @ p["w"] + p["b"] - batch["y"]) ** 2)

rng = np.random.default_rng(0)
params = {"w": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
          "b": jnp.zeros((4,), jnp.float32)}
def make_batch(i):
    r = np.random.default_rng(i)
    return {"x": jnp.asarray(r.normal(size=(16, 8)), jnp.float32),
            "y": jnp.asarray(r.normal(size=(16, 4)), jnp.float32)}
batches = [make_batch(i) for i in range(4)]
"""


def run(code: str, tmp_path: pathlib.Path, devices: int = 1) -> str:
  script = tmp_path / "snippet.py"
  script.write_text(code)
  env = dict(
    os.environ,
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    JAX_PLATFORMS="cpu",
  )
  proc = subprocess.run(
    [sys.executable, str(script)],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc.stdout


def test_quickstart_snippet_trains(tmp_path):
  code = (
    PREAMBLE
    + snippet(None)
    + textwrap.dedent("""
    assert int(opt_state.count) == 4
    assert np.isfinite(float(loss_fn(params, batches[0])))
    print("ok")
  """)
  )
  assert run(code, tmp_path).strip().endswith("ok")
