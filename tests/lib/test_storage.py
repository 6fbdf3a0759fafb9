"""Storage of the cycle's start: the displacement (default) or a weight copy.

Checked against an independent NumPy implementation of the delta-storage
variant of Algorithm 1 (below, written from its description, not from the
library), against the float64 algorithm where float32 or bfloat16 weights
cannot resolve the reference updates (the case the default exists for),
against the copy path within a derived bound, and for the memory it takes.
"""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import optax_profit
from optax_profit import _profit
from optax_profit._storage import Anchor
from tests import numpy_reference as ref_impl
from tests.lib.test_algorithm import jax_loss


def run_profit_delta_storage(theta, grad_at, num_calls, main, ref, n_ref, round_delta):
  """Algorithm 1 with the displacement stored instead of theta_ref.

  During the reference steps ``delta`` accumulates the reference updates,
  rounded to the storage dtype after every step (``round_delta``); the main
  step uses ``delta`` for the projection, restores ``theta_ref = theta -
  delta``, runs the main optimizer there and lands on ``theta_ref + u``.
  (The library does this where ``delta`` is narrower than the weights.)

  Returns:
    The params after every call (float64 NumPy dicts).
  """
  theta = {k: np.array(v, np.float64) for k, v in theta.items()}
  delta, out = None, []
  for i in range(num_calls):
    g = grad_at(theta, i)
    phase = i % (n_ref + 1)
    if phase < n_ref:
      u = ref.step(g, theta)
      theta = {k: theta[k] + u[k] for k in theta}
      if phase == 0:
        delta = {k: round_delta(u[k]) for k in u}
      else:
        delta = {k: round_delta(delta[k] + u[k]) for k in u}
    else:
      omega = sum(float(np.sum(delta[k] * g[k])) for k in g)
      dn2 = sum(float(np.sum(delta[k] ** 2)) for k in g)
      if omega < 0 and dn2 > 0:
        g = {k: g[k] - (omega / dn2) * delta[k] for k in g}
      anchor = {k: theta[k] - delta[k] for k in theta}
      u = main.step(g, anchor)
      theta = {k: anchor[k] + u[k] for k in theta}
    out.append(theta)
  return out


def _to_float32(x):
  return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


def _stack(batches):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *batches)


def _to_bfloat16(x):
  return np.asarray(x, np.float64).astype(ml_dtypes.bfloat16).astype(np.float64)


@pytest.mark.parametrize("n_ref", [1, 3])
@pytest.mark.parametrize("path", [*_profit.DRIVERS, "train_step"])
@pytest.mark.parametrize(
  "delta_dtype, round_delta",
  [(jnp.float32, _to_float32), (jnp.bfloat16, _to_bfloat16)],
  ids=["float32", "bfloat16"],
)
def test_equals_numpy_delta_storage(n_ref, path, delta_dtype, round_delta):
  """float64 params, float32 or bfloat16 delta: equals the NumPy variant.

  The rounding of delta moves the weights by more than the tolerance over
  these cycles (checked): the copy path would fail this test.
  """
  with jax.enable_x64(True):
    length = n_ref + 1
    batches = ref_impl.make_batches(8 * length, seed=80 + n_ref)
    want = ref_impl.run_on_batches(
      batches, n_ref, wd=0.3, run=run_profit_delta_storage, round_delta=round_delta
    )
    exact = ref_impl.run_on_batches(batches, n_ref, wd=0.3).params
    tx = optax_profit.profit(
      optax.adamw(0.05, weight_decay=0.3),
      ref=0.05,
      n_ref=n_ref,
      delta_dtype=delta_dtype,
    )
    params = jax.tree.map(jnp.asarray, ref_impl.init_params())
    state = tx.init(params)
    got = []
    if path == "train_step":
      step = optax_profit.make_train_step(jax_loss, tx)
      for c in range(8):
        chunk = batches[c * length : (c + 1) * length]
        params, state, _ = step(params, state, _stack(chunk))
        got.extend([None] * n_ref + [jax.tree.map(np.array, params)])
    else:
      forced = _profit.with_driver(tx, path)
      update = jax.jit(forced.update)
      grad_fn = jax.jit(jax.grad(jax_loss))
      for batch in batches:
        updates, state = update(grad_fn(params, batch), state, params)
        params = optax.apply_updates(params, updates)
        got.append(jax.tree.map(np.array, params))
    assert state.delta["W"].dtype == delta_dtype and state.theta_ref is None
    gap = 0.0  # to the copy path
    for i, g in enumerate(got):
      if g is None:
        continue
      for k in g:
        np.testing.assert_allclose(
          g[k],
          want[i][k],
          rtol=1e-10,
          atol=1e-10,
          err_msg=f"{k} after call {i}",
        )
        gap = max(gap, float(np.max(np.abs(want[i][k] - exact[i][k]))))
    assert gap > 1e-9  # The copy path would fail the comparison above.


def test_default_storage_layout_per_params_dtype():
  """float32/float64 leaves: a displacement in their dtype; bfloat16/float16
  leaves: theta_ref in their dtype plus a bfloat16 residual (the bytes of a
  float32 displacement)."""
  params = {
    "a": jnp.ones(3, jnp.bfloat16),
    "b": jnp.ones(2, jnp.float16),
    "c": jnp.ones(2, jnp.float32),
  }
  state = optax_profit.profit(optax.sgd(0.1), ref=0.01).init(params)
  for k in ("a", "b"):
    anchor = state.delta[k]
    assert isinstance(anchor, Anchor)
    assert anchor.theta_ref.dtype == params[k].dtype
    assert anchor.residual.dtype == jnp.bfloat16
    np.testing.assert_array_equal(anchor.theta_ref, params[k])
    assert anchor.theta_ref.nbytes + anchor.residual.nbytes == 4 * params[k].size
  assert state.delta["c"].dtype == jnp.float32
  with jax.enable_x64(True):
    state = optax_profit.profit(optax.sgd(0.1), ref=0.01).init(
      {"a": jnp.zeros(3, jnp.float64)}
    )
  assert state.delta["a"].dtype == jnp.float64


def test_tiny_reference_rate_on_float32_follows_the_float64_algorithm():
  """Reference updates below half an ulp of the float32 weights.

  With ``ref = 1e-8`` (ratio 1e4 to the main rate) a reference step moves
  each weight (|w| ~ 0.5, ulp 6e-8) by ~1e-9: float32 weights do not move.
  The default storage still counts those updates: its projections are the
  float64 algorithm's; the copy storage sees the few weights small enough
  to move, and its omegas are far off.
  """
  num_cycles = 8
  batches = ref_impl.make_batches(2 * num_cycles, seed=90)
  rec = ref_impl.run_profit(
    ref_impl.init_params(),
    lambda th, i: ref_impl.grad(th, batches[i]),
    len(batches),
    main=ref_impl.Adam(1e-4),
    ref=ref_impl.SGD(1e-8),
    n_ref=1,
  )
  assert any(rec.projected) and not all(rec.projected)
  runs = {}
  for storage in ("delta", "copy"):
    tx = optax_profit.profit(optax.adam(1e-4), ref=1e-8, storage=storage)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), ref_impl.init_params())
    state, update = tx.init(params), jax.jit(tx.update)
    grad_fn = jax.jit(jax.grad(jax_loss))
    omegas, projected = [], []
    for i, batch in enumerate(batches):
      updates, state = update(grad_fn(params, batch), state, params)
      params = optax.apply_updates(params, updates)
      if i % 2:
        omegas.append(float(state.diagnostics.omega))
        projected.append(bool(state.diagnostics.projected))
    runs[storage] = (params, omegas, projected)
  params, omegas, projected = runs["delta"]
  assert projected == rec.projected
  np.testing.assert_allclose(omegas, rec.omegas, rtol=1e-3)
  for k in params:
    np.testing.assert_allclose(
      np.asarray(params[k]), rec.params[-1][k], rtol=0, atol=1e-6
    )
  _, omegas, _ = runs["copy"]
  rel = np.abs(np.asarray(omegas) - rec.omegas) / np.abs(rec.omegas)
  assert np.median(rel) > 0.5, rel


@pytest.mark.parametrize("seed", range(20))
def test_bfloat16_params_delta_and_projection_follow_float64(seed):
  """bfloat16 weights, a reference step far below their resolution.

  The stored delta's cosine to the float64 algorithm's delta is >= 0.99 and
  the projection fires exactly when the float64 algorithm's does; with the
  copy storage most weights do not move and the realized displacement
  points elsewhere.
  """
  rng = np.random.default_rng(seed)
  bf16 = lambda x: jnp.asarray(x, jnp.float32).astype(jnp.bfloat16)
  params = {"w": bf16(rng.normal(size=(8, 4))), "b": bf16(1 + rng.normal(size=4))}
  g0 = {k: bf16(rng.normal(size=v.shape)) for k, v in params.items()}
  g1 = {
    k: bf16(rng.normal(size=v.shape) + 0.8 * np.asarray(g0[k], np.float64))
    for k, v in params.items()
  }
  ref = 1e-4  # |update| ~ 1e-4, bfloat16 ulp of |w| ~ 1 is 2**-7
  delta64 = np.concatenate(
    [-ref * np.asarray(g0[k], np.float64).ravel() for k in params]
  )
  g1_64 = np.concatenate([np.asarray(g1[k], np.float64).ravel() for k in params])
  omega64 = float(delta64 @ g1_64)
  for storage in ("delta", "copy"):
    tx = optax_profit.profit(optax.adamw(1e-3), ref=ref, storage=storage)
    state = tx.init(params)
    updates, state = tx.update(g0, state, params)
    moved = optax.apply_updates(params, updates)
    if storage == "delta":
      # bfloat16 leaves: delta = (params - theta_ref) + residual.
      f64 = lambda x: np.asarray(x, np.float64)
      stored = np.concatenate(
        [
          (
            f64(moved[k]) - f64(state.delta[k].theta_ref) + f64(state.delta[k].residual)
          ).ravel()
          for k in params
        ]
      )
      cos = stored @ delta64 / (np.linalg.norm(stored) * np.linalg.norm(delta64))
      assert cos >= 0.99, cos
    else:
      realized = np.concatenate(
        [
          (np.asarray(moved[k], np.float64) - np.asarray(params[k], np.float64)).ravel()
          for k in params
        ]
      )
      norms = np.linalg.norm(realized) * np.linalg.norm(delta64)
      assert realized @ delta64 <= 0.9 * norms
    _, state = tx.update(g1, state, moved)
    if storage == "delta":
      assert bool(state.diagnostics.projected) == (omega64 < 0)
      np.testing.assert_allclose(float(state.diagnostics.omega), omega64, rtol=1e-2)


def test_bfloat16_delta_stays_within_the_rounding_bound_of_the_exact_path():
  """float32 params, bfloat16 delta vs the exact path, 40 cycles.

  Each main step restores theta_ref with an error of at most half a
  bfloat16 ulp of delta per element (<= 2**-8 |delta|); SGD as the main
  optimizer only translates that error (its update does not depend on the
  weights, and the reference steps add the same gradient-driven steps to
  both runs of this quadratic loss, whose gradient is contracting), so the
  gap after K cycles is at most the sum of those errors. A path that dropped
  the restoration would drift by the displacements themselves, 256 times the
  bound.
  """
  target = {"w": jnp.linspace(-1.0, 1.0, 64), "b": jnp.float32(0.5)}

  def loss(p, noise):
    return 0.5 * sum(jnp.sum((p[k] - target[k] - noise[k]) ** 2) for k in p)

  rng = np.random.default_rng(0)
  num_cycles = 40
  noises = [
    {"w": jnp.asarray(rng.normal(size=64), jnp.float32), "b": jnp.float32(rng.normal())}
    for _ in range(2 * num_cycles)
  ]
  p0 = {"w": jnp.zeros(64, jnp.float32), "b": jnp.float32(0.0)}
  runs = {}
  for name, kwargs in (
    ("exact", {"storage": "copy"}),
    ("bf16", {"delta_dtype": jnp.bfloat16}),
  ):
    dtype = kwargs.get("delta_dtype")
    tx = optax_profit.profit(optax.sgd(0.05), ref=0.01, **kwargs)
    params, state = p0, tx.init(p0)
    update = jax.jit(tx.update)
    bound, traj = 0.0, []
    for i, noise in enumerate(noises):
      grads = jax.grad(loss)(params, noise)
      updates, state = update(grads, state, params)
      if dtype is not None and i % 2 == 0:
        # delta of this cycle (one reference step): the rounding bound.
        bound += (
          float(max(jnp.max(jnp.abs(x)) for x in jax.tree.leaves(state.delta)))
          * 2.0**-8
        )
      params = optax.apply_updates(params, updates)
      traj.append(params)
    runs[name] = (traj, bound)
  gap = max(
    float(jnp.max(jnp.abs(a[k] - b[k])))
    for a, b in zip(runs["exact"][0], runs["bf16"][0], strict=True)
    for k in a
  )
  bound = runs["bf16"][1]
  assert 0 < gap <= bound, (gap, bound)


def test_state_bytes_halved_for_float32_params():
  params = {"w": jnp.zeros((300, 200), jnp.float32), "b": jnp.zeros(200)}
  param_bytes = 4 * (300 * 200 + 200)

  def nbytes(tree):
    return sum(x.nbytes for x in jax.tree.leaves(tree))

  main = optax.adamw(1e-3)
  main_bytes = nbytes(main.init(params))
  default = optax_profit.profit(main, ref=1e-4).init(params)
  exact = optax_profit.profit(main, ref=1e-4, storage="copy").init(params)
  half = optax_profit.profit(main, ref=1e-4, delta_dtype="bfloat16").init(params)
  for state in (default, exact):
    assert nbytes(state) - main_bytes - param_bytes <= 48  # + scalars
  assert nbytes(half) - main_bytes - param_bytes // 2 <= 48
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(default.delta))
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(half.delta))
  assert half.theta_ref is None and default.theta_ref is None and exact.delta is None


@pytest.mark.parametrize("bad", ["int8", jnp.int32, "not-a-dtype", 3])
def test_bad_delta_dtype_names_the_argument(bad):
  with pytest.raises(TypeError, match="delta_dtype"):
    optax_profit.profit(optax.sgd(0.1), ref=0.01, delta_dtype=bad)


def test_inject_hyperparams_with_delta_dtype_name():
  tx = optax.inject_hyperparams(optax_profit.profit, static_args=("main",))(
    main=optax.adam(0.05), ref=0.01, delta_dtype="bfloat16"
  )
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(4):
    updates, state = update({"w": jnp.full(3, 0.1)}, state, params)
    params = optax.apply_updates(params, updates)
  assert state.inner_state.delta["w"].dtype == jnp.bfloat16
  assert int(state.inner_state.count) == 4


def test_bfloat16_rounding_matches_ml_dtypes():
  """One reference step stores exactly the bfloat16 rounding of the update."""
  params = {"w": jnp.asarray(np.linspace(-1, 1, 17), jnp.float32)}
  grads = {"w": jnp.asarray(np.linspace(0.3, 3.1, 17) / 7, jnp.float32)}
  tx = optax_profit.profit(optax.sgd(0.1), ref=0.0123, delta_dtype=jnp.bfloat16)
  updates, state = tx.update(grads, tx.init(params), params)
  want = (np.asarray(updates["w"])).astype(ml_dtypes.bfloat16)
  np.testing.assert_array_equal(np.asarray(state.delta["w"]), want)
