"""`profit` composes with optax wrappers and Flax, checked against NumPy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_profit
from tests import numpy_reference as ref_impl
from tests.lib.test_algorithm import assert_trajectories_close, jax_loss, run_library

N_REF = 2
NUM_CALLS = 5 * (N_REF + 1)


# float64, the NumPy reference's precision (the `x64` fixture of conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


def np_clip(g, max_norm):
  norm = np.sqrt(sum(np.sum(x**2) for x in g.values()))
  return {k: x * min(1.0, max_norm / norm) for k, x in g.items()}


def jax_grad_at(batches):
  g = jax.jit(jax.grad(jax_loss))
  return lambda params, i: g(params, batches[i])


def test_chain_clip_then_profit():
  batches = ref_impl.make_batches(NUM_CALLS, seed=11, noise=3.0)
  p0 = ref_impl.init_params()
  rec = ref_impl.run_profit(
    p0,
    lambda th, i: np_clip(ref_impl.grad(th, batches[i]), 0.1),
    NUM_CALLS,
    main=ref_impl.Adam(0.05),
    ref=ref_impl.SGD(0.05),
    n_ref=N_REF,
  )
  tx = optax.chain(
    optax.clip_by_global_norm(0.1),
    optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=N_REF),
  )
  traj, _ = run_library(tx, batches, p0)
  assert_trajectories_close(traj, rec)


def test_inject_hyperparams_main_learning_rate_logged_and_changed():
  batches = ref_impl.make_batches(2 * (N_REF + 1), seed=12)
  main = optax.inject_hyperparams(optax.adam)(learning_rate=0.05)
  tx = optax_profit.profit(main, ref=0.05, n_ref=N_REF)
  params = jax.tree.map(jnp.asarray, ref_impl.init_params())
  state = tx.init(params)
  grad_at = jax_grad_at(batches)
  update = jax.jit(tx.update)
  lrs = []
  for i in range(len(batches)):
    if i == N_REF + 1:  # second cycle: learning rate 0 for the main step
      state = optax.tree.set(state, learning_rate=jnp.asarray(0.0))
      start_of_cycle = params
    updates, state = update(grad_at(params, i), state, params)
    params = optax.apply_updates(params, updates)
    lrs.append(float(optax.tree.get(state, "learning_rate")))
  assert lrs == [0.05] * (N_REF + 1) + [0.0] * (N_REF + 1)
  # With a zero main rate the cycle restores theta_ref exactly (to rounding).
  chex.assert_trees_all_close(params, start_of_cycle, atol=1e-15, rtol=0)
  assert int(state.main_state.count) == 2  # main advanced once per cycle


def test_multisteps_accumulates_before_profit():
  k = 2
  batches = ref_impl.make_batches(k * NUM_CALLS, seed=13)
  p0 = ref_impl.init_params()
  rec = ref_impl.run_on_batches(batches, N_REF, per_call=k)
  tx = optax.MultiSteps(  # float64 accumulator: its default is float32
    optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=N_REF),
    k,
    accumulator_dtype=jnp.float64,
  )
  traj, _ = run_library(tx, batches, p0)
  assert_trajectories_close(traj[k - 1 :: k], rec)


@pytest.mark.parametrize("how", ["multi_transform", "masked"])
def test_head_only_profit(how):
  batches = ref_impl.make_batches(NUM_CALLS, seed=14)
  p0 = ref_impl.init_params()
  rec = ref_impl.run_on_batches(batches, N_REF, trainable=("b",))
  inner = optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=N_REF)
  if how == "multi_transform":
    tx = optax.multi_transform(
      {"profit": inner, "frozen": optax.set_to_zero()},
      {"W": "frozen", "b": "profit"},
    )
  else:
    tx = optax.chain(
      optax.masked(inner, {"W": False, "b": True}),
      optax.masked(optax.set_to_zero(), {"W": True, "b": False}),
    )
  traj, states = run_library(tx, batches, p0)
  assert_trajectories_close(traj, rec)
  for params in traj:
    np.testing.assert_array_equal(np.asarray(params["W"]), p0["W"])
  diag = optax_profit.profit_diagnostics(states[-1])
  assert set(diag) == {"omega", "projected", "delta_norm", "cosine", "removed_fraction"}
  np.testing.assert_allclose(float(diag["omega"]), rec.omegas[-1], rtol=1e-9)


def test_masked_alone_passes_the_other_gradients_through():
  """Why the head-only recipe needs `set_to_zero`: `optax.masked` alone
  returns the raw gradient of the masked-out leaves as their updates, and
  `apply_updates` then takes a step of gradient *ascent* on them."""
  batches = ref_impl.make_batches(3, seed=14)
  p0 = jax.tree.map(jnp.asarray, ref_impl.init_params())
  tx = optax.masked(
    optax_profit.profit(optax.adam(0.05), ref=0.05), {"W": False, "b": True}
  )
  state = tx.init(p0)
  grads = jax.grad(jax_loss)(p0, batches[0])
  updates, _ = tx.update(grads, state, p0)
  np.testing.assert_array_equal(np.asarray(updates["W"]), np.asarray(grads["W"]))


@pytest.mark.parametrize("nan_call", [0, 1, N_REF])
def test_apply_if_finite_skips_a_nan_step(nan_call):
  batches = ref_impl.make_batches(NUM_CALLS, seed=15)
  p0 = ref_impl.init_params()
  # The reference never sees the NaN batch: it simply skips that call.
  kept = [b for i, b in enumerate(batches) if i != nan_call]
  rec = ref_impl.run_on_batches(kept, N_REF)
  tx = optax.apply_if_finite(
    optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=N_REF),
    max_consecutive_errors=3,
  )
  grad_at = jax_grad_at(batches)

  def poisoned(params, i):
    g = grad_at(params, i)
    return jax.tree.map(lambda x: x * jnp.nan, g) if i == nan_call else g

  traj, states = run_library(tx, batches, p0, grad_at=poisoned)
  assert not bool(states[nan_call].last_finite)
  np.testing.assert_array_equal(
    np.asarray(states[nan_call].inner_state.count), nan_call
  )
  del traj[nan_call]
  assert_trajectories_close(traj, rec)
  chex.assert_tree_all_finite(states[-1].inner_state)


def test_flax_train_state_apply_gradients():
  from flax import linen as nn
  from flax.training import train_state

  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      return jnp.tanh(nn.Dense(2, param_dtype=jnp.float64)(x))

  batches = ref_impl.make_batches(NUM_CALLS, seed=16)
  p0 = ref_impl.init_params()
  rec = ref_impl.run_on_batches(batches, N_REF)
  model = Model()
  variables = {"params": {"Dense_0": {"kernel": p0["W"], "bias": p0["b"]}}}
  variables = jax.tree.map(jnp.asarray, variables)
  state = train_state.TrainState.create(
    apply_fn=model.apply,
    params=variables["params"],
    tx=optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=N_REF),
  )

  @jax.jit
  def step(state, batch):
    def loss(params):
      pred = state.apply_fn({"params": params}, batch["x"])
      return 0.5 * jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))

    return state.apply_gradients(grads=jax.grad(loss)(state.params))

  traj = []
  for batch in batches:
    state = step(state, batch)
    dense = state.params["Dense_0"]
    traj.append({"W": dense["kernel"], "b": dense["bias"]})
  assert_trajectories_close(traj, rec)


def test_flax_nnx_optimizer():
  from flax import nnx

  batches = ref_impl.make_batches(NUM_CALLS, seed=17)
  p0 = ref_impl.init_params()
  rec = ref_impl.run_on_batches(batches, N_REF)
  model = nnx.Linear(3, 2, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
  model.kernel[...] = jnp.asarray(p0["W"])
  model.bias[...] = jnp.asarray(p0["b"])
  optimizer = nnx.Optimizer(
    model,
    optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=N_REF),
    wrt=nnx.Param,
  )

  @nnx.jit
  def step(model, optimizer, batch):
    def loss(model):
      pred = jnp.tanh(model(batch["x"]))
      return 0.5 * jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))

    optimizer.update(model, nnx.grad(loss)(model))

  traj = []
  for batch in batches:
    step(model, optimizer, jax.tree.map(jnp.asarray, batch))
    traj.append({"W": model.kernel[...], "b": model.bias[...]})
  assert_trajectories_close(traj, rec)
  # The diagnostics read straight from the optimizer's (wrapped) state.
  diag = optax_profit.profit_diagnostics(optimizer.opt_state)
  assert isinstance(diag["omega"], jax.Array)
  np.testing.assert_allclose(float(diag["omega"]), rec.omegas[-1], rtol=1e-9)
  assert bool(diag["projected"]) == rec.projected[-1]


def test_lookahead_around_profit():
  """`optax.lookahead(profit(...))`: the fast weights follow plain PROFIT
  until the first synchronisation, which then interpolates."""
  batches = ref_impl.make_batches(6, seed=18)
  p0 = jax.tree.map(jnp.asarray, ref_impl.init_params())
  inner = optax_profit.profit(optax.adam(0.05), ref=0.05)
  tx = optax.lookahead(inner, sync_period=4, slow_step_size=0.5)
  params = optax.LookaheadParams.init_synced(p0)
  state = tx.init(params)
  plain, plain_state = p0, inner.init(p0)
  grad = jax.jit(jax.grad(jax_loss))
  for i, batch in enumerate(batches[:4]):
    g = grad(params.fast, batch)
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    u, plain_state = inner.update(grad(plain, batch), plain_state, plain)
    plain = optax.apply_updates(plain, u)
    if i < 3:
      chex.assert_trees_all_close(params.fast, plain, rtol=1e-12)
  # After 4 fast steps: slow = fast = p0 + 0.5 * (plain - p0).
  want = jax.tree.map(lambda a, b: a + 0.5 * (b - a), p0, plain)
  chex.assert_trees_all_close(params.slow, want, rtol=1e-12)
