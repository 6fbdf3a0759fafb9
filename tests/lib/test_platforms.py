"""What the library compiles to on GPU, checked here without a GPU.

XLA:GPU copies the predicate of every ``while`` and ``conditional`` to the
host and waits for it. The per-call ``update`` and the static cycle of
``make_train_step`` must lower for CUDA without device control flow: no
``stablehlo.while`` or ``stablehlo.if``, and ``stablehlo.case`` only on a
constant index (what ``jax.lax.platform_dependent`` leaves when lowering for
one platform). On CPU the in-place loops stay (see benchmarks/RESULTS.md).
"""

import re

import jax
import jax.numpy as jnp
import optax
import pytest

import optax_profit

PARAMS = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}


def _constant_indices(module: str) -> set[str]:
  """SSA names that are constants, or cases on constants returning constants."""
  names = set(re.findall(r"(%[\w#]+) = stablehlo\.constant", module))
  for match in re.finditer(
    r"(%[\w#]+) = \"stablehlo\.case\"\((%[\w#]+)\) \((.*?)\) :", module, re.S
  ):
    returned = re.findall(r"stablehlo\.return (%[\w#]+)", match.group(3))
    if match.group(2) in names and all(r in names for r in returned):
      names.add(match.group(1))
  return names


def control_flow(module: str) -> dict[str, int]:
  """Counts of device control flow in an exported StableHLO module."""
  constants = _constant_indices(module)
  cases = re.findall(r"\"stablehlo\.case\"\((%[\w#]+)\)", module)
  return {
    "while": module.count("stablehlo.while"),
    "if": module.count("stablehlo.if"),
    "data-dependent case": sum(c not in constants for c in cases),
  }


def test_the_checker_sees_control_flow():
  """The checker itself: a data-dependent `lax.cond` and a `while` count."""

  def f(x):
    y = jax.lax.cond(x.sum() > 0, lambda: x + 1, lambda: x - 1)
    return jax.lax.while_loop(
      lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2), (0, y)
    )[1]

  module = jax.export.export(jax.jit(f), platforms=["cuda"])(jnp.ones(3)).mlir_module()
  counts = control_flow(module)
  assert counts["while"] == 1 and counts["data-dependent case"] + counts["if"] >= 1


def _export(fn, *args, platform="cuda"):
  return jax.export.export(jax.jit(fn), platforms=[platform])(*args).mlir_module()


@pytest.mark.parametrize(
  "kwargs",
  [
    {},
    {"storage": "copy"},
    {"delta_dtype": jnp.bfloat16},
    {"n_ref": 3, "warmup_steps": 5},
  ],
  ids=["default", "copy", "bf16-delta", "n_ref3-warmup"],
)
def test_per_call_update_has_no_device_control_flow_on_gpu(kwargs):
  tx = optax_profit.profit(optax.adamw(1e-3), ref=1e-4, **kwargs)

  def step(params, state, t):
    grads = jax.tree.map(lambda p: p * t, params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  module = _export(step, PARAMS, tx.init(PARAMS), jnp.float32(1.0))
  assert control_flow(module) == {"while": 0, "if": 0, "data-dependent case": 0}
  # On CPU the same update runs its phases in in-place loops.
  assert (
    control_flow(
      _export(step, PARAMS, tx.init(PARAMS), jnp.float32(1.0), platform="cpu")
    )["while"]
    > 0
  )


def _loss(params, batch):
  return sum(
    jnp.sum(p * b)
    for p, b in zip(jax.tree.leaves(params), jax.tree.leaves(batch), strict=True)
  )


@pytest.mark.parametrize("n_ref", [1, 3])
def test_static_cycle_has_no_device_control_flow_on_gpu(n_ref):
  tx = optax_profit.profit(optax.adamw(1e-3), ref=1e-4, n_ref=n_ref)
  step = optax_profit.make_train_step(_loss, tx, donate=False)
  batches = jax.tree.map(lambda p: jnp.stack([p] * (n_ref + 1)), PARAMS)
  cycle = step._cycle  # pylint: disable=protected-access
  module = jax.export.export(cycle, platforms=["cuda"])(
    PARAMS, tx.init(PARAMS), batches
  ).mlir_module()
  counts = control_flow(module)
  # n_ref > 1: the scan over the reference batches, whose trip count XLA
  # knows (XLA:GPU then runs it without reading a predicate back).
  assert counts == {"while": int(n_ref > 1), "if": 0, "data-dependent case": 0}
  # Traced under an outer jit the step scans per-call updates on GPU: only
  # the scan's loop, no phase selection.
  module = jax.export.export(jax.jit(step), platforms=["cuda"])(
    PARAMS, tx.init(PARAMS), batches
  ).mlir_module()
  assert control_flow(module) == {"while": 1, "if": 0, "data-dependent case": 0}
