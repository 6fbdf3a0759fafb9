"""PROFIT equals an independent float64 NumPy implementation of Algorithm 1."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_profit
from optax_profit import _profit
from tests import numpy_reference as ref_impl

TOL = 1e-10
NUM_CYCLES = 8


def jax_loss(params, batch):
  pred = jnp.tanh(batch["x"] @ params["W"] + params["b"])
  return 0.5 * jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))


def numpy_grad_at(batches):
  return lambda theta, i: ref_impl.grad(theta, batches[i])


MAINS = {
  # name: (optax factory, numpy factory)
  "sgd": (lambda: optax.sgd(0.3), lambda: ref_impl.SGD(0.3)),
  "adam": (lambda: optax.adam(0.05), lambda: ref_impl.Adam(0.05)),
  "adamw": (
    lambda: optax.adamw(0.05, weight_decay=0.5),
    lambda: ref_impl.Adam(0.05, wd=0.5),
  ),
}


def run_library(tx, batches, params0, jit=True, grad_at=None):
  """Per-call loop with the library: params and states after every call.

  ``grad_at(params, i)`` gives the i-th gradient (default: ``jax_loss``'s
  on ``batches[i]``).
  """
  params = jax.tree.map(jnp.asarray, params0)
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  grad_fn = jax.jit(jax.grad(jax_loss)) if jit else jax.grad(jax_loss)
  grad_at = grad_at or (lambda params, i: grad_fn(params, batches[i]))
  trajectory, states = [], []
  for i in range(len(batches)):
    grads = grad_at(params, i)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    trajectory.append(params)
    states.append(state)
  return trajectory, states


def assert_trajectories_close(trajectory, record, tol=TOL):
  assert len(trajectory) == len(record.params)
  for i, (got, want) in enumerate(zip(trajectory, record.params, strict=False)):
    for k in want:
      np.testing.assert_allclose(
        np.asarray(got[k]),
        want[k],
        rtol=tol,
        atol=tol,
        err_msg=f"params[{k!r}] after update call {i}",
      )


# float64, the NumPy reference's precision (the `x64` fixture of conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


def with_variant(tx, variant):
  """``tx`` with its per-call driver forced (``default``: the platform's)."""
  return tx if variant == "default" else _profit.with_driver(tx, variant)


CASES = [
  (main, n_ref, storage, "default")
  for main in sorted(MAINS)
  for n_ref in (1, 3)
  for storage in ("delta", "copy")
] + [
  ("adamw", n_ref, storage, variant)
  for n_ref in (1, 3)
  for storage in ("delta", "copy")
  for variant in _profit.DRIVERS
]


@pytest.mark.parametrize("main_name, n_ref, storage, variant", CASES)
def test_matches_numpy_algorithm_1(main_name, n_ref, storage, variant):
  optax_main, numpy_main = MAINS[main_name]
  ref_lr = 0.05
  batches = ref_impl.make_batches(NUM_CYCLES * (n_ref + 1), seed=n_ref)
  params0 = ref_impl.init_params()
  record = ref_impl.run_profit(
    params0,
    numpy_grad_at(batches),
    len(batches),
    main=numpy_main(),
    ref=ref_impl.SGD(ref_lr),
    n_ref=n_ref,
  )
  # The scenario must exercise both branches of the projection.
  assert any(record.projected) and not all(record.projected), record.projected

  tx = optax_profit.profit(optax_main(), ref=ref_lr, n_ref=n_ref, storage=storage)
  trajectory, states = run_library(with_variant(tx, variant), batches, params0)
  assert_trajectories_close(trajectory, record)

  # Diagnostics of each main step.
  main_states = states[n_ref :: n_ref + 1]
  np.testing.assert_allclose(
    [float(s.diagnostics.omega) for s in main_states], record.omegas, rtol=1e-9
  )
  assert [bool(s.diagnostics.projected) for s in main_states] == record.projected
  np.testing.assert_allclose(
    [float(s.diagnostics.delta_norm) for s in main_states],
    record.delta_norms,
    rtol=1e-9,
  )
  # The main optimizer's state advances once per cycle.
  if main_name != "sgd":
    adam_count = optax.tree.get(states[-1].main_state, "count")
    assert int(adam_count) == NUM_CYCLES


@pytest.mark.parametrize("mutant", ["parallel", "displaced"])
def test_reference_scenario_catches_known_mistakes(mutant):
  """The equivalence test above fails for the two known public mistakes."""
  optax_main, numpy_main = MAINS["adamw"]
  batches = ref_impl.make_batches(NUM_CYCLES * 2, seed=1)
  params0 = ref_impl.init_params()
  kwargs = dict(ref=None, n_ref=1)
  correct = ref_impl.run_profit(
    params0,
    numpy_grad_at(batches),
    len(batches),
    main=numpy_main(),
    **{**kwargs, "ref": ref_impl.SGD(0.05)},
  )
  wrong = ref_impl.run_profit(
    params0,
    numpy_grad_at(batches),
    len(batches),
    main=numpy_main(),
    **{**kwargs, "ref": ref_impl.SGD(0.05)},
    mutant=mutant,
  )
  diff = max(
    np.max(np.abs(a[k] - b[k]))
    for a, b in zip(correct.params, wrong.params, strict=False)
    for k in a
  )
  assert diff > 1e3 * TOL
  tx = optax_profit.profit(optax_main(), ref=0.05, n_ref=1)
  trajectory, _ = run_library(tx, batches, params0)
  with pytest.raises(AssertionError):
    assert_trajectories_close(trajectory, wrong)


@pytest.mark.parametrize("variant", ["default", *_profit.DRIVERS])
def test_warmup_then_cycles(variant):
  batches = ref_impl.make_batches(3 + 4 * 3, seed=7)
  params0 = ref_impl.init_params(1)
  record = ref_impl.run_profit(
    params0,
    numpy_grad_at(batches),
    len(batches),
    main=ref_impl.Adam(0.05),
    ref=ref_impl.SGD(0.02),
    n_ref=2,
    warmup_steps=3,
  )
  tx = optax_profit.profit(optax.adam(0.05), ref=0.02, n_ref=2, warmup_steps=3)
  trajectory, states = run_library(with_variant(tx, variant), batches, params0)
  assert_trajectories_close(trajectory, record)
  # Warm-up steps share main's state: 3 warm-up steps + 4 main steps.
  assert int(optax.tree.get(states[-1].main_state, "count")) == 3 + 4


def test_stateful_reference_optimizer_persists_across_cycles():
  batches = ref_impl.make_batches(6 * 3, seed=3)
  params0 = ref_impl.init_params(2)
  record = ref_impl.run_profit(
    params0,
    numpy_grad_at(batches),
    len(batches),
    main=ref_impl.Adam(0.05),
    ref=ref_impl.SGD(0.02, momentum=0.9),
    n_ref=2,
  )
  tx = optax_profit.profit(optax.adam(0.05), ref=optax.sgd(0.02, momentum=0.9), n_ref=2)
  trajectory, _ = run_library(tx, batches, params0)
  assert_trajectories_close(trajectory, record)


def test_reference_learning_rate_schedule_counts_reference_steps():
  # Values exact in float32 (optax evaluates schedules in float32). If the
  # schedule counted all update calls, the drop would come at call 3, not at
  # the 4th reference step (call 6).
  schedule = optax.piecewise_constant_schedule(0.0625, {3: 0.25})
  batches = ref_impl.make_batches(7 * 2, seed=4)
  params0 = ref_impl.init_params(3)
  record = ref_impl.run_profit(
    params0,
    numpy_grad_at(batches),
    len(batches),
    main=ref_impl.SGD(0.3),
    ref=ref_impl.SGD(lambda k: 0.0625 if k < 3 else 0.015625),
    n_ref=1,
  )
  tx = optax_profit.profit(optax.sgd(0.3), ref=schedule, n_ref=1)
  trajectory, _ = run_library(tx, batches, params0)
  assert_trajectories_close(trajectory, record)


def test_jit_equals_no_jit():
  batches = ref_impl.make_batches(3 * 4, seed=5)
  params0 = ref_impl.init_params(4)
  tx = optax_profit.profit(optax.adamw(0.05, weight_decay=0.1), 0.05, n_ref=3)
  jitted, _ = run_library(tx, batches, params0, jit=True)
  with jax.disable_jit():
    eager, _ = run_library(tx, batches, params0, jit=False)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-12, atol=1e-12)
