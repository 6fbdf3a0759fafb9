"""Every recipe of the docs (``docs/recipes/*.py``) runs and does what it says.

Each recipe is a complete script; the docs show it verbatim
(``literalinclude``). Here each one runs (in this process, or in a subprocess
with 8 simulated devices for the sharded one) and its result is checked
against an independent computation: the float64 NumPy Algorithm 1 of
``tests/numpy_reference.py``, or a differently composed run.
"""

import os
import pathlib
import runpy
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_profit
from tests import numpy_reference as ref_impl

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECIPES = ROOT / "docs" / "recipes"
# float32 recipes against the float64 reference, over a handful of steps.
RTOL, ATOL = 2e-4, 2e-6


def run_recipe(name: str) -> dict:
  """Runs ``docs/recipes/NAME.py``; returns its globals."""
  return runpy.run_path(str(RECIPES / f"{name}.py"), run_name="__main__")


def f64(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def numpy_profit(p0, batches, main, ref, n_ref=1, **kwargs):
  """Algorithm 1 in float64 NumPy over ``batches`` (one update call each)."""
  batches = f64(batches)
  return ref_impl.run_profit(
      f64(p0), lambda th, i: ref_impl.grad(th, batches[i]), len(batches),
      main=main, ref=ref, n_ref=n_ref, **kwargs,
  )  # fmt: skip


def assert_close(actual, expected, what):
  for k in expected:
    np.testing.assert_allclose(
      np.asarray(actual[k]), expected[k], rtol=RTOL, atol=ATOL, err_msg=f"{what}: {k}"
    )


def test_every_recipe_has_a_page_and_a_test():
  names = sorted(p.stem for p in RECIPES.glob("*.py"))
  this = pathlib.Path(__file__).read_text()
  for name in names:
    page = (RECIPES / f"{name}.md").read_text()
    assert f"{{literalinclude}} {name}.py" in page, name
    assert f"def test_{name}_recipe" in this, f"no test for docs/recipes/{name}.py"
  index = (RECIPES / "index.md").read_text()
  assert all(f"\n{name}\n" in index for name in names), "recipe missing in index.md"


def test_warmup_recipe():
  ns = run_recipe("warmup")
  rec = numpy_profit(
      ns["pretrained"], ns["batches"], ref_impl.Adam(1e-2), ref_impl.SGD(1e-3),
      warmup_steps=ns["WARMUP"],
  )  # fmt: skip
  assert_close(ns["params"], rec.params[-1], "after warm-up and cycles")
  # Without the warm-up the same run ends elsewhere: the check can fail.
  no_warmup = numpy_profit(
    ns["pretrained"], ns["batches"], ref_impl.Adam(1e-2), ref_impl.SGD(1e-3)
  )
  assert not np.allclose(no_warmup.params[-1]["W"], rec.params[-1]["W"], rtol=RTOL)
  assert ns["main_steps"] == ns["WARMUP"] + (len(ns["batches"]) - ns["WARMUP"]) // 2


def test_head_only_recipe():
  ns = run_recipe("head_only")
  p0 = {"W": ns["pretrained"]["body"]["W"], "b": ns["pretrained"]["head"]["b"]}
  rec = numpy_profit(
    p0, ns["batches"], ref_impl.Adam(1e-2), ref_impl.SGD(1e-3), trainable=("b",)
  )
  np.testing.assert_array_equal(
    np.asarray(ns["params"]["body"]["W"]), np.asarray(p0["W"])
  )
  assert_close(ns["params"]["head"], {"b": rec.params[-1]["b"]}, "head")


def test_lora_recipe():
  from flax import nnx

  ns = run_recipe("lora")
  model = ns["model"]
  np.testing.assert_array_equal(
    np.asarray(model.base_module.kernel[...]), ns["base_kernel"]
  )
  assert np.any(np.asarray(model.lora_b[...]) != 0)  # lora_b starts at zero
  # The same PROFIT on the adapter weights alone (the page's alternative).
  rngs = nnx.Rngs(0)
  alone = nnx.LoRA(
      in_features=3, lora_rank=2, out_features=2,
      base_module=nnx.Linear(3, 2, rngs=rngs), rngs=rngs,
  )  # fmt: skip
  optimizer = nnx.Optimizer(
    alone, optax_profit.profit(optax.adam(1e-2), ref=1e-3), wrt=nnx.LoRAParam
  )

  @nnx.jit
  def step(model, optimizer, batch):
    def loss_fn(model):
      return jnp.mean((model(batch["x"]) - batch["y"]) ** 2)

    optimizer.update(
      model, nnx.grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
    )

  for batch in ns["batches"]:
    step(alone, optimizer, batch)
  for name in ("lora_a", "lora_b"):
    np.testing.assert_allclose(
        np.asarray(getattr(model, name)[...]),
        np.asarray(getattr(alone, name)[...]),
        rtol=1e-5, atol=1e-7, err_msg=name,
    )  # fmt: skip


def test_train_state_recipe():
  ns = run_recipe("train_state")
  dense = lambda p: {"W": p["Dense_0"]["kernel"], "b": p["Dense_0"]["bias"]}
  rec = numpy_profit(
    dense(ns["pretrained"]), ns["batches"], ref_impl.Adam(1e-2), ref_impl.SGD(1e-3)
  )
  assert_close(dense(ns["state"].params), rec.params[-1], "TrainState params")
  assert int(ns["state"].step) == len(ns["batches"])
  # After 7 calls (a reference step) the weights to evaluate are those after
  # call 6, where the cycle started.
  assert_close(dense(ns["eval_weights"]), rec.params[5], "evaluated weights")
  pred = np.tanh(ns["batches"][-1]["x"] @ rec.params[5]["W"] + rec.params[5]["b"])
  want = 0.5 * np.mean(np.sum((pred - ns["batches"][-1]["y"]) ** 2, axis=-1))
  np.testing.assert_allclose(float(ns["eval_loss"]), want, rtol=RTOL)


def test_schedules_recipe():
  ns = run_recipe("schedules")
  # Main step m runs on batch m (warm-up) or W + (m - W) * 2 + 1; the last of
  # 25 main steps (2 warm-up + 23 cycles) is batch 47.
  n_ref, warmup = ns["n_ref"], ns["warmup_steps"]
  batch_of = lambda m: m if m < warmup else warmup + (m - warmup) * (n_ref + 1) + n_ref
  mapped = ns["main_steps_to_batches"](ns["in_batches"], n_ref, warmup)
  for m in range(25):
    want = 1e-2 * (1 - batch_of(m) / 48)
    np.testing.assert_allclose(float(mapped(m)), want, rtol=1e-6, atol=1e-9)
  assert batch_of(24) == 47
  np.testing.assert_allclose(ns["last_lr"], 1e-2 / 48, rtol=1e-5)
  np.testing.assert_allclose(ns["naive_lr"], 1e-2 * (1 - 24 / 48), rtol=1e-5)
  assert int(ns["state"].main_state.count) == 25


def test_equinox_loop_recipe():
  import equinox as eqx

  ns = run_recipe("equinox_loop")
  # The same PROFIT on the plain arrays, one jax.grad per batch.
  static = eqx.partition(ns["model"], eqx.is_array)[1]
  loss = lambda p, b: ns["loss"](eqx.combine(p, static), b)
  tx = optax_profit.profit(optax.adamw(1e-2), ref=1e-3, n_ref=1)
  params = ns["pretrained"]
  state, traj = tx.init(params), []
  for batch in ns["batches"]:
    updates, state = tx.update(jax.grad(loss)(params, batch), state, params)
    params = optax.apply_updates(params, updates)
    traj.append(params)
  arrays = lambda m: eqx.filter(m, eqx.is_array)
  for got, want, what in (
    (arrays(ns["loop_model"]), traj[6], "per-call loop, 7 batches"),
    (arrays(ns["eval_model"]), traj[5], "evaluated: the cycle's start"),
    (arrays(ns["step_model"]), traj[7], "make_train_step, 8 batches"),
  ):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=what)
  assert ns["eval_model"].activation is jnp.tanh
  assert not any(x.is_deleted() for x in jax.tree.leaves(arrays(ns["model"])))


def test_nnx_optimizer_recipe():
  ns = run_recipe("nnx_optimizer")
  p0 = {"W": ns["pretrained"]["kernel"], "b": ns["pretrained"]["bias"]}
  rec = numpy_profit(p0, ns["batches"], ref_impl.Adam(1e-2), ref_impl.SGD(1e-3))
  model = ns["model"]
  assert_close({"W": model.kernel[...], "b": model.bias[...]}, rec.params[-1], "nnx")
  diag = ns["diagnostics"]
  assert bool(diag["projected"]) == rec.projected[-1]
  np.testing.assert_allclose(float(diag["omega"]), rec.omegas[-1], rtol=1e-3)
  np.testing.assert_allclose(float(diag["delta_norm"]), rec.delta_norms[-1], rtol=1e-4)


SHARDED_CHECK = """
import jax, numpy as np
from tests import numpy_reference as ref_impl
for path, leaf in jax.tree_util.tree_leaves_with_path(opt_state.delta):
  assert leaf.sharding == param_sh[path[0].key], path
assert opt_state.main_state[0].mu["W"].sharding == param_sh["W"]
assert opt_state.main_state[0].nu["b"].sharding == param_sh["b"]
flat = [{k: np.asarray(v[i], np.float64) for k, v in c.items()} for c in cycles for i in range(2)]
rec = ref_impl.run_profit(
    {k: np.asarray(v, np.float64) for k, v in pretrained.items()},
    lambda th, i: ref_impl.grad(th, flat[i]), len(flat),
    main=ref_impl.Adam(1e-2, wd=1e-4), ref=ref_impl.SGD(1e-3), n_ref=1,
)
for k in params:
  np.testing.assert_allclose(np.asarray(params[k]), rec.params[-1][k], rtol=2e-4, atol=2e-6)
print("sharded recipe ok")
"""


def test_sharded_recipe(tmp_path):
  script = tmp_path / "sharded_check.py"
  script.write_text(
    (RECIPES / "sharded.py").read_text() + textwrap.dedent(SHARDED_CHECK)
  )
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=8",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
  )
  proc = subprocess.run(
      [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=600, check=False,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "sharded recipe ok" in proc.stdout


def test_checkpointing_recipe():
  ns = run_recipe("checkpointing")
  # The restored state is the saved one, leaf for leaf (None fields included).
  saved = {"params": ns["params"], "opt_state": ns["opt_state"]}
  restored = {k: ns["restored"][k] for k in saved}
  assert jax.tree.structure(saved) == jax.tree.structure(restored)
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(restored), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(ns["restored"]["opt_state"].count) == ns["step"] == 3  # mid-cycle
  # The resumed run is bit-identical to an uninterrupted one...
  tx, pretrained = ns["tx"], ns["pretrained"]
  full_params, _ = ns["train"](pretrained, tx.init(pretrained), ns["batches"])
  for k in full_params:
    np.testing.assert_array_equal(
      np.asarray(ns["resumed_params"][k]), np.asarray(full_params[k])
    )
  # ... which is Algorithm 1 (AdamW's default weight decay is 1e-4).
  rec = numpy_profit(
    pretrained, ns["batches"], ref_impl.Adam(1e-2, wd=1e-4), ref_impl.SGD(1e-3)
  )
  assert_close(ns["resumed_params"], rec.params[-1], "resumed")


def test_inject_hyperparams_recipe():
  ns = run_recipe("inject_hyperparams")
  batches = f64(ns["batches"])
  main = ref_impl.Adam(1e-2)

  def grad_at(theta, i):
    if i == 4:
      main.lr = 5e-3
    return ref_impl.grad(theta, batches[i])

  rec = ref_impl.run_profit(
      f64(ns["pretrained"]), grad_at, len(batches),
      main=main, ref=ref_impl.SGD(1e-3), n_ref=1,
  )  # fmt: skip
  assert_close(ns["params_1"], rec.params[-1], "main learning rate halved")
  # Reference steps 3 and 4 (calls 4 and 6) have length 0: no projection.
  ref_lr = lambda k: 1e-3 if k < 2 else 0.0
  rec = numpy_profit(
    ns["pretrained"], batches, ref_impl.Adam(1e-2), ref_impl.SGD(ref_lr)
  )
  assert_close(ns["params_2"], rec.params[-1], "ref injected")
  assert rec.delta_norms[-1] == 0 and not rec.projected[-1]
  assert float(ns["state_2"].hyperparams["ref"]) == 0.0


def _multi_host_job(tmp_path, name, processes, devices):
  """Runs docs/recipes/multi_host.py as ``processes`` x ``devices`` (CPU)."""
  from examples.sharded_finetune import launch

  port, out = launch.free_port(), tmp_path / f"{name}.npz"
  env = launch.child_env(
    {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  )

  def argv(i):
    return [
      *(sys.executable, str(RECIPES / "multi_host.py"), "--process-id", str(i)),
      *("--num-processes", str(processes), "--coordinator", f"127.0.0.1:{port}"),
      *("--ckpt", str(tmp_path / f"{name}_ckpt"), "--out", str(out)),
    ]

  procs = [
    subprocess.Popen(
      argv(i),
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(processes)
  ]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=180)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, log in zip(procs, logs, strict=True):
    assert p.returncode == 0, log[-4000:]
  return dict(np.load(out)), logs


def test_multi_host_recipe(tmp_path):
  """2 processes x 2 devices and 1 x 4 agree, and are Algorithm 1."""
  two, (log0, log1) = _multi_host_job(tmp_path, "two", 2, 2)
  one, _ = _multi_host_job(tmp_path, "one", 1, 4)
  assert "omega" in log0 and "omega" not in log1  # process 0 reports alone
  for k in one:
    np.testing.assert_allclose(two[k], one[k], rtol=1e-6, atol=1e-6, err_msg=k)
  batches = []
  for cycle in range(3):
    rng = np.random.default_rng(cycle)
    b = {"x": rng.normal(size=(2, 16, 8)), "y": rng.normal(size=(2, 16, 4))}
    batches += [{k: v[i].astype("f4") for k, v in b.items()} for i in range(2)]
  p0 = {
    "W": 0.5 * np.random.default_rng(0).normal(size=(8, 4)).astype("f4"),
    "b": np.zeros(4, "f4"),
  }
  rec = numpy_profit(p0, batches, ref_impl.SGD(0.5, momentum=0.9), ref_impl.SGD(5e-3))
  assert_close(two, rec.params[-1], "2 processes, resumed from the checkpoint")
