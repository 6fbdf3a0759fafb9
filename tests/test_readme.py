"""The README's Python snippets run as written.

Each snippet is taken from README.md (the first ``python`` block after its
heading) and executed after a small preamble that defines what the snippet
leaves to the reader (``params``, ``loss_fn``, ``batches``, a mesh...). The
sharding and checkpointing snippets run in a subprocess with 8 simulated CPU
devices, as the README describes.
"""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]


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


SHARDED_PREAMBLE = (
  PREAMBLE
  + """
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((4, 2), ("data", "model"),
                     axis_types=(jax.sharding.AxisType.Auto,) * 2)
param_sh = {"w": NamedSharding(mesh, P("data", "model")),
            "b": NamedSharding(mesh, P("model"))}
batches = jax.tree.map(lambda *xs: jnp.stack(xs), *batches[:2])  # one cycle
initial = jax.tree.map(np.asarray, params)
"""
)

SHARDED_CHECKS = """
assert opt_state.delta is not None
for path, leaf in jax.tree_util.tree_leaves_with_path(opt_state.delta):
    assert leaf.sharding == param_sh[path[0].key], path
assert opt_state.main_state[0].mu["w"].sharding == param_sh["w"]
assert int(opt_state.count) == 2 and metrics["loss"].shape == (2,)
"""


def test_sharded_training_and_checkpointing_snippets(tmp_path):
  code = (
    SHARDED_PREAMBLE
    + snippet("Sharded training")
    + SHARDED_CHECKS
    + "step = 1\nabstract_params = jax.eval_shape(lambda: params)\n"
    + snippet("Checkpointing").replace("/abs/path/ckpt", str(tmp_path / "ckpt"))
    + textwrap.dedent("""
      for a, b in zip(jax.tree.leaves(restored["params"]), jax.tree.leaves(params)):
          assert a.sharding == b.sharding
          np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
      for a, b in zip(jax.tree.leaves(restored["opt_state"]),
                      jax.tree.leaves(opt_state)):
          np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
      assert int(restored["step"]) == 1
      print("ok")
    """)
  )
  assert run(code, tmp_path, devices=8).strip().endswith("ok")


def test_head_only_snippet_freezes_the_body(tmp_path):
  preamble = PREAMBLE + textwrap.dedent("""
    params = {"body": {"w": params["w"]}, "head": {"b": params["b"]}}
    def loss_fn(p, batch):
        return jnp.mean((batch["x"] @ p["body"]["w"] + p["head"]["b"] - batch["y"]) ** 2)
    initial = jax.tree.map(np.asarray, params)
  """)
  code = (
    preamble
    + snippet("Head-only PROFIT")
    + textwrap.dedent("""
    np.testing.assert_array_equal(np.asarray(params["body"]["w"]), initial["body"]["w"])
    assert np.any(np.asarray(params["head"]["b"]) != initial["head"]["b"])
    assert int(optax_profit.profit_diagnostics(opt_state)["projected"].size) == 1
    print("ok")
  """)
  )
  assert run(code, tmp_path).strip().endswith("ok")
