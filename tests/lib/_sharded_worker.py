"""Multi-device computations for tests/lib/test_sharding.py and test_checkpoint.py.

Run as ``python tests/lib/_sharded_worker.py OUTDIR TASK [TASK ...]`` in a fresh
process; the caller sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
before JAX starts (the worker refuses to run with fewer devices). It records
raw facts (sharding specs, compiled HLO text, arrays as ``.npz``) under
``OUTDIR``; the tests make the assertions. Tasks:

* ``sharding``: shardings of params and PROFIT state (eager ``init``, after
  jitted updates without ``out_shardings``, on an ``Explicit`` mesh); HLO of
  the optimizer update (also with XLA:CPU's one-pass reductions, which the
  other HLO leaves out: it is traced as on GPU/TPU), of a variant with a
  replicated ``delta``, of a per-batch train step with PROFIT(AdamW) and
  AdamW, and of the example's cycle step with PROFIT(SGD) and SGD; the same
  short PROFIT run, with the example's step, on the 8-device mesh and on one
  device.
* ``ckpt-save``: a per-call PROFIT run on the mesh, uninterrupted, and the
  same run stopped between its reference steps and its main step, saved.
* ``ckpt-resume``: (run it in a fresh process) restores that checkpoint onto
  the mesh from abstract targets and finishes the run.

The module also holds the small model, data and step builders that the
single-device tests import. Not collected by pytest (no ``test_`` prefix).
"""

import contextlib
import json
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import benchmarks.update
import optax_profit
from examples.sharded_finetune import checkpointing, models, train

NUM_DEVICES = 8
MESH_SHAPE = (4, 2)
BATCH, SEQ = 8, 16
N_REF = 1
TOTAL_CALLS = 6  # Three PROFIT cycles of n_ref + 1 = 2 calls.
STOP_AFTER = 3  # Cycle 2 has taken its reference step; its main step is next.
LR, REF_LR = 1e-2, 1e-3
_START = time.perf_counter()


def log(message: str) -> None:
  """Progress on stderr (the tests show it when the worker fails)."""
  elapsed = time.perf_counter() - _START
  cpu = time.process_time()
  print(
    f"[worker {elapsed:5.1f}s, cpu {cpu:5.1f}s] {message}", file=sys.stderr, flush=True
  )


def tiny_model() -> models.TransformerLM:
  """A one-block transformer whose sharded dimensions divide a 4x2 mesh."""
  return models.TransformerLM(
    vocab_size=256, d_model=32, num_layers=1, num_heads=4, d_ff=64, max_len=SEQ
  )


def tokens(index: int) -> np.ndarray:
  """Batch number ``index``: uniform random bytes, int32 ``[BATCH, SEQ+1]``."""
  rng = np.random.default_rng((1234, index))
  return rng.integers(0, 256, size=(BATCH, SEQ + 1)).astype(np.int32)


def profit_adamw() -> optax_profit.ProfitTransformation:
  """PROFIT around AdamW."""
  return optax_profit.profit(optax.adamw(LR, weight_decay=0.1), ref=REF_LR, n_ref=N_REF)


def spec_of(x: jax.Array) -> list[Any]:
  """The sharding of ``x``: the mesh axes of each dimension, for JSON."""
  s = x.sharding
  if isinstance(s, jax.sharding.NamedSharding):
    spec = list(s.spec) + [None] * (x.ndim - len(s.spec))
    return [list(a) if isinstance(a, tuple) else a for a in spec]
  return ["<single-device>"] * x.ndim


def describe(tree: Any) -> dict[str, Any]:
  """``{path: {"spec", "shape", "shard_shape", "mesh"}}`` of array leaves."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if isinstance(leaf, jax.Array):
      mesh = getattr(leaf.sharding, "mesh", None)
      out[jax.tree_util.keystr(path)] = {
        "spec": spec_of(leaf),
        "shape": list(leaf.shape),
        "shard_shape": list(leaf.sharding.shard_shape(leaf.shape)),
        "mesh": None if mesh is None else dict(mesh.shape),
      }
  return out


def abstract(tree: Any, shardings: Any) -> Any:
  """``jax.ShapeDtypeStruct`` leaves carrying ``shardings`` (for lowering)."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    tree,
    shardings,
  )


def save_tree(path: pathlib.Path, tree: Any) -> None:
  """Saves the leaves of ``tree`` to ``.npz``, keyed by their paths."""
  arrays = {
    jax.tree_util.keystr(p): np.asarray(jax.device_get(x))
    for p, x in jax.tree_util.tree_leaves_with_path(tree)
  }
  np.savez(path, **arrays)


@jax.jit
def fake_grads(params: Any, i: int) -> Any:
  """Cheap, step-dependent stand-in gradients with the params' shardings."""
  return jax.tree.map(lambda x: jnp.cos(x * (i + 1.0)), params)


def per_call_step(
  loss_fn: Callable[..., jax.Array],
  tx: optax.GradientTransformation,
  mesh: jax.sharding.Mesh,
  shardings: Any,
  state_shardings: Any,
) -> Callable[..., Any]:
  """One batch and one ``tx.update`` per call, jitted with shardings."""

  def step(params, opt_state, batch):
    grads = jax.grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return jax.jit(
    step,
    in_shardings=(
      shardings,
      state_shardings,
      models.batch_sharding(mesh, stacked=False),
    ),
    out_shardings=(shardings, state_shardings),
    donate_argnums=(0, 1),
  )


# PROFIT's reductions traced as on GPU/TPU (plain sums, scalar all-reduces)
# instead of XLA:CPU's one-pass variadic reduction.
accelerator_sums = benchmarks.update.plain_sums


def _sharded_setup(mesh: jax.sharding.Mesh) -> tuple[Any, Any, Any]:
  model = tiny_model()
  params, shardings = models.init_params(model, mesh, seed=0)
  return train.make_loss_fn(model, mesh), params, shardings


def task_sharding(out: pathlib.Path) -> dict[str, Any]:
  """Shardings, HLO and the sharded-vs-single-device run (see module doc)."""
  mesh = models.make_mesh(MESH_SHAPE)
  loss_fn, params, shardings = _sharded_setup(mesh)
  tx = profit_adamw()
  report: dict[str, Any] = {"params": describe(params)}

  log("state shardings: eager init, then jitted updates")
  state = tx.init(params)
  report["state_eager_init"] = describe(state)

  def opt_step(grads, opt_state, params):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  p, s = jax.tree.map(lambda x: x.copy(), params), state
  update = jax.jit(opt_step)  # No shardings given: XLA propagates them.
  for i in range(N_REF + 2):  # A whole cycle and the next reference step.
    p, s = update(fake_grads(p, i), s, p)
  report["state_after_updates"] = describe(s)
  report["params_after_updates"] = describe(p)
  report["count_after_updates"] = int(s.count)

  log("state shardings on an Explicit mesh")
  explicit = jax.make_mesh(
    MESH_SHAPE, models.AXES, axis_types=(jax.sharding.AxisType.Explicit,) * 2
  )
  e_params = jax.tree.map(
    lambda x, s: jax.device_put(x, jax.sharding.NamedSharding(explicit, s.spec)),
    params,
    shardings,
  )
  e_state = tx.init(e_params)
  e_update = jax.jit(tx.update)
  for i in range(N_REF + 1):
    e_updates, e_state = e_update(fake_grads(e_params, i), e_state, e_params)
  report["explicit"] = {
    "params": describe(e_params),
    "state": describe(e_state),
    "updates": describe(e_updates),
    "projected": bool(e_state.diagnostics.projected),
  }

  log("HLO of the optimizer update")
  state_shardings = models.opt_state_shardings(tx, params, shardings, mesh)
  rep = models.replicated(mesh)
  bad = state_shardings._replace(delta=jax.tree.map(lambda _: rep, shardings))
  for name, st_sh, sums in (
    ("update", state_shardings, accelerator_sums),
    ("update_cpu", state_shardings, contextlib.nullcontext),
    ("update_replicated", bad, accelerator_sums),
  ):
    with sums():
      hlo = jax.jit(
        lambda *args: opt_step(*args),  # a new function: no cached trace
        in_shardings=(shardings, st_sh, shardings),
        out_shardings=(shardings, st_sh),
        donate_argnums=(1, 2),
      ).lower(
        abstract(params, shardings),
        abstract(state, st_sh),
        abstract(params, shardings),
      )
    (out / f"{name}.hlo").write_text(hlo.compile().as_text())

  log("HLO of per-batch train steps, PROFIT and AdamW")
  batch = jnp.asarray(tokens(0))
  for name, opt in (("profit", tx), ("adamw", optax.adamw(LR, weight_decay=0.1))):
    st_sh = models.opt_state_shardings(opt, params, shardings, mesh)
    per_batch = per_call_step(loss_fn, opt, mesh, shardings, st_sh)
    with accelerator_sums():
      hlo = per_batch.lower(
        abstract(params, shardings),
        abstract(jax.eval_shape(opt.init, params), st_sh),
        abstract(batch, models.batch_sharding(mesh, stacked=False)),
      )
    (out / f"batch_step_{name}.hlo").write_text(hlo.compile().as_text())

  # PROFIT around SGD with momentum from here: Adam's normalisation maps
  # float noise in near-zero gradient coordinates to +-lr steps, which the
  # sharded-vs-single-device comparison cannot tell from a bug.
  log("HLO of the example's cycle step, PROFIT(SGD) and SGD")
  sgd = optax.sgd(0.5, momentum=0.9)
  run_tx = optax_profit.profit(sgd, ref=REF_LR, n_ref=N_REF)
  batches = np.stack([tokens(i) for i in range(N_REF + 1)])
  for name, opt in (("profit", run_tx), ("sgd", sgd)):
    st_sh = models.opt_state_shardings(opt, params, shardings, mesh)
    scanned = train.make_sharded_train_step(
      loss_fn, opt, mesh, shardings, st_sh, N_REF + 1
    )
    with accelerator_sums():
      hlo = scanned.lower(
        abstract(params, shardings),
        abstract(jax.eval_shape(opt.init, params), st_sh),
        abstract(batches, models.batch_sharding(mesh)),
      )
    (out / f"cycle_step_{name}.hlo").write_text(hlo.compile().as_text())

  log("the same PROFIT run on the mesh and on one device (CPU reductions)")
  single = models.make_mesh((1, 1), devices=jax.devices()[:1])
  for name, run_mesh in (("sharded", mesh), ("single", single)):
    if run_mesh is mesh:
      r_loss, r_params, r_sh = loss_fn, params, shardings
    else:
      r_loss, r_params, r_sh = _sharded_setup(run_mesh)
    st_sh = models.opt_state_shardings(run_tx, r_params, r_sh, run_mesh)
    step = train.make_sharded_train_step(
      r_loss, run_tx, run_mesh, r_sh, st_sh, N_REF + 1
    )
    save_tree(out / f"init_{name}.npz", r_params)
    st = jax.jit(run_tx.init, out_shardings=st_sh)(r_params)
    diagnostics = []
    for c in range(4):
      b = np.stack([tokens(100 + (N_REF + 1) * c + i) for i in range(N_REF + 1)])
      b = jax.device_put(b, models.batch_sharding(run_mesh))
      r_params, st, metrics = step(r_params, st, b)
      diagnostics.append(
        {k: float(metrics[k]) for k in ("omega", "delta_norm", "projected")}
        | {"loss": np.asarray(metrics["loss"]).tolist()}
      )
    report[f"run_{name}"] = {"diagnostics": diagnostics, "params": describe(r_params)}
    save_tree(out / f"final_{name}.npz", r_params)
  return report


def _checkpoint_setup() -> dict[str, Any]:
  mesh = models.make_mesh(MESH_SHAPE)
  model = tiny_model()
  init = lambda rng: model.init(rng, jnp.zeros((1, SEQ), jnp.int32))["params"]
  boxed = jax.eval_shape(init, jax.random.key(0))
  shardings = models.param_shardings(boxed, mesh, models.LOGICAL_AXIS_RULES)
  abstract_params = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nn.meta.unbox(boxed)
  )
  tx = profit_adamw()
  state_shardings = models.opt_state_shardings(tx, abstract_params, shardings, mesh)
  loss_fn = train.make_loss_fn(model, mesh)
  batch_sharding = models.batch_sharding(mesh, stacked=False)
  return {
    "mesh": mesh,
    "model": model,
    "tx": tx,
    "shardings": shardings,
    "abstract_params": abstract_params,
    "state_shardings": state_shardings,
    "step": per_call_step(loss_fn, tx, mesh, shardings, state_shardings),
    "batch": lambda i: jax.device_put(tokens(i), batch_sharding),
  }


def task_ckpt_save(out: pathlib.Path) -> dict[str, Any]:
  """Uninterrupted run, and the run stopped mid-cycle and saved."""
  env = _checkpoint_setup()
  tx, step, batch = env["tx"], env["step"], env["batch"]
  params, _ = models.init_params(env["model"], env["mesh"], seed=0)
  log("uninterrupted per-call run")
  p = jax.tree.map(lambda x: x.copy(), params)
  s = jax.jit(tx.init, out_shardings=env["state_shardings"])(p)
  for i in range(TOTAL_CALLS):
    p, s = step(p, s, batch(i))
  save_tree(out / "uninterrupted.npz", {"params": p, "opt_state": s})
  log("interrupted run, saved mid-cycle")
  s = jax.jit(tx.init, out_shardings=env["state_shardings"])(params)
  for i in range(STOP_AFTER):
    params, s = step(params, s, batch(i))
  state = checkpointing.TrainState(
    jax.device_put(jnp.int32(STOP_AFTER), models.replicated(env["mesh"])),
    params,
    s,
  )
  with checkpointing.manager(out / "checkpoints") as mngr:
    checkpointing.save(mngr, state, extra={"note": "mid-cycle"})
  save_tree(out / "at_interrupt.npz", {"params": params, "opt_state": s})
  return {"saved": describe(state), "count": int(s.count)}


def task_ckpt_resume(out: pathlib.Path) -> dict[str, Any]:
  """Restores the mid-cycle checkpoint onto the mesh and finishes the run."""
  env = _checkpoint_setup()
  mesh = env["mesh"]
  # The target is built from shapes and shardings only, not from a state.
  target = checkpointing.abstract_state(
    checkpointing.TrainState(
      jax.ShapeDtypeStruct((), jnp.int32),
      env["abstract_params"],
      jax.eval_shape(env["tx"].init, env["abstract_params"]),
    ),
    checkpointing.TrainState(
      models.replicated(mesh), env["shardings"], env["state_shardings"]
    ),
  )
  log("restore")
  with checkpointing.manager(out / "checkpoints") as mngr:
    state, extra = checkpointing.restore(mngr, target)
  report = {
    "restored": describe(state),
    "extra": extra,
    "step": int(state.step),
    "count": int(state.opt_state.count),
    "opt_state_type": type(state.opt_state).__name__,
  }
  save_tree(
    out / "restored.npz", {"params": state.params, "opt_state": state.opt_state}
  )
  log("continue")
  p, s = state.params, state.opt_state
  for i in range(int(state.step), TOTAL_CALLS):
    p, s = env["step"](p, s, env["batch"](i))
  save_tree(out / "resumed.npz", {"params": p, "opt_state": s})
  return report


TASKS = {
  "sharding": task_sharding,
  "ckpt-save": task_ckpt_save,
  "ckpt-resume": task_ckpt_resume,
}


def main(argv: list[str]) -> None:
  """Runs the tasks named in ``argv[1:]``, writing into ``argv[0]``."""
  if jax.device_count() < NUM_DEVICES:
    raise SystemExit(
      f"needs {NUM_DEVICES} devices (set XLA_FLAGS=--xla_force_host_platform_"
      f"device_count={NUM_DEVICES} before JAX starts), got {jax.device_count()}"
    )
  out = pathlib.Path(argv[0])
  out.mkdir(parents=True, exist_ok=True)
  for task in argv[1:]:
    report = TASKS[task](out)
    (out / f"{task}.json").write_text(json.dumps(report, indent=1))
  log("done")


if __name__ == "__main__":
  main(sys.argv[1:])
