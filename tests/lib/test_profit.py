"""API contract of `optax_profit.profit`: errors, dtypes, jit, optax harness."""

import collections
import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_profit


def quadratic_loss(params, target):
  return sum(jnp.sum((p - target) ** 2) for p in jax.tree.leaves(params))


PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.1, -0.1])}


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
  "kwargs, error, match",
  [
    (dict(n_ref=0), ValueError, "n_ref"),
    (dict(n_ref=-2), ValueError, "n_ref"),
    (dict(n_ref=1.0), TypeError, "n_ref"),
    (dict(n_ref=True), TypeError, "n_ref"),
    (dict(n_ref="2"), TypeError, "n_ref"),
    (dict(warmup_steps=-1), ValueError, "warmup_steps"),
    (dict(warmup_steps=2.5), TypeError, "warmup_steps"),
    (dict(ref=-1e-3), ValueError, "ref"),
    (dict(ref=float("nan")), ValueError, "ref"),
    (dict(ref="sgd"), TypeError, "ref"),
    (dict(main=lambda: None), TypeError, "main"),
    (dict(n_ref=2**31), ValueError, r"`n_ref` must be <= 2147483646 \(the step"),
    (dict(n_ref=2**31 - 1), ValueError, "n_ref"),  # n_ref + 1 overflows
    (dict(warmup_steps=2**31), ValueError, r"`warmup_steps` must be <= 2147483647"),
    (dict(storage=1), TypeError, "`storage` must be 'delta', 'copy' or"),
  ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
  args = dict(main=optax.adam(1e-3), ref=1e-4)
  args.update(kwargs)
  with pytest.raises(error, match=match):
    optax_profit.profit(**args)


@pytest.mark.parametrize(
  "args, error, match",
  [
    (("Copy",), ValueError, "`storage` must be 'delta' .* got 'Copy'"),
    (("delta", jnp.int32), TypeError, "must be None or a floating dtype"),
    (("delta", "int8"), TypeError, "must be None or a floating dtype"),
    (("copy", jnp.float32), ValueError, "applies to storage='delta' only"),
  ],
)
def test_storage_validates_itself(args, error, match):
  with pytest.raises(error, match=match):
    optax_profit.Storage(*args)
  assert optax_profit.Storage("delta", "bfloat16").dtype == jnp.bfloat16


def test_numpy_integer_n_ref_is_accepted():
  tx = optax_profit.profit(optax.sgd(0.1), ref=0.01, n_ref=np.int64(2))
  assert tx.spec.n_ref == 2


def test_update_without_params_raises():
  tx = optax_profit.profit(optax.sgd(0.1), ref=0.01)
  state = tx.init(PARAMS)
  with pytest.raises(ValueError, match="params"):
    tx.update(PARAMS, state)
  with pytest.raises(ValueError, match="params"):
    jax.jit(tx.update)(PARAMS, state)


# ------------------------------------------------------------------ state
def test_state_fields_and_tree_get():
  tx = optax_profit.profit(optax.adam(0.1), ref=0.01)
  state = tx.init(PARAMS)
  assert isinstance(state, optax_profit.ProfitState)
  assert state.theta_ref is None  # the default stores the displacement
  chex.assert_trees_all_equal(state.delta, jax.tree.map(jnp.zeros_like, PARAMS))
  assert isinstance(state.diagnostics, optax_profit.Diagnostics)
  assert state.diagnostics._fields == (
    "omega",
    "delta_norm",
    "cosine",
    "removed_fraction",
    "projected",
  )
  for name in ("omega", "projected", "delta_norm", "cosine", "removed_fraction"):
    chex.assert_shape(optax.tree.get(state, name), ())
    assert float(optax.tree.get(state, name)) == 0  # before the first main step
  chex.assert_shape(state.count, ())
  assert optax.tree.get(state, "projected").dtype == jnp.bool_


def test_state_of_the_old_layout_restores_by_leaf_order():
  """The CHANGELOG's recipe: a state saved with the five diagnostics as
  fields of its own (before `diagnostics`) has the new state's leaves, in
  order."""
  old_fields = (
    "count theta_ref ref_state main_state omega delta_norm cosine "
    "removed_fraction projected delta cycle_length warmup_steps"
  ).split()
  OldState = collections.namedtuple("OldState", old_fields)
  tx = optax_profit.profit(optax.adam(0.1), ref=0.01, n_ref=1)
  state = tx.init(PARAMS)
  for g in (PARAMS, PARAMS):  # a whole cycle; the main step projects
    state = tx.update(g, state, PARAMS)[1]
  d = state.diagnostics
  old = OldState(
    state.count, None, state.ref_state, state.main_state, d.omega,
    d.delta_norm, d.cosine, d.removed_fraction, d.projected, state.delta,
    state.cycle_length, state.warmup_steps,
  )  # fmt: skip
  assert bool(d.projected)  # nonzero diagnostics, distinguishable leaves
  structure = jax.tree.structure(tx.init(PARAMS))
  chex.assert_trees_all_equal(
    jax.tree.unflatten(structure, jax.tree.leaves(old)), state
  )


def test_copy_storage_state_is_a_copy_not_an_alias():
  tx = optax_profit.profit(optax.adam(0.1), ref=0.01, storage="copy")
  state = tx.init(PARAMS)
  assert state.delta is None
  chex.assert_trees_all_equal(state.theta_ref, PARAMS)
  # A copy, not an alias: callers donate params and state together.
  for p, t in zip(
    jax.tree.leaves(PARAMS), jax.tree.leaves(state.theta_ref), strict=True
  ):
    assert p.unsafe_buffer_pointer() != t.unsafe_buffer_pointer()


@pytest.mark.parametrize(
  "kwargs, error, match",
  [
    (dict(storage="theta_ref"), ValueError, "storage"),
    (dict(storage="copy", delta_dtype=jnp.bfloat16), ValueError, "delta_dtype"),
    (
      dict(storage=optax_profit.Storage("copy"), delta_dtype="float32"),
      ValueError,
      "delta_dtype",
    ),
  ],
)
def test_bad_storage_arguments(kwargs, error, match):
  with pytest.raises(error, match=match):
    optax_profit.profit(optax.adam(1e-3), ref=1e-4, **kwargs)


def test_spec_describes_the_transformation():
  main = optax.adam(1e-3)
  tx = optax_profit.profit(main, ref=1e-4, n_ref=jnp.int32(3), warmup_steps=np.int64(2))
  spec = optax_profit.profit_spec(tx)
  assert spec is tx.spec and isinstance(spec, optax_profit.ProfitSpec)
  # Concrete ints of any kind become Python ints: make_train_step can use them.
  assert (spec.n_ref, spec.warmup_steps, spec.cycle_length) == (3, 2, 4)
  assert type(spec.n_ref) is int and spec.is_static
  assert spec.storage == optax_profit.Storage("delta")
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.n_ref = 1
  assert optax_profit.profit_spec(optax.chain(tx)) is None


def test_spec_survives_replace_and_rewrapping():
  """The spec belongs to `update`: kept by `_replace(init=...)` and by
  wrappers that keep `update`, dropped with a new `update`."""
  tx = optax_profit.profit(optax.sgd(0.1), ref=0.01, n_ref=2)
  kept = [
    tx._replace(init=tx.init),
    tx._replace(init=lambda params: tx.init(params)),
    optax.with_extra_args_support(tx),
    optax.GradientTransformationExtraArgs(*tx),
    optax.GradientTransformation(tx.init, tx.update),
  ]
  for other in kept:
    assert optax_profit.profit_spec(other) is tx.spec
  assert tx._replace(init=tx.init).spec is tx.spec
  # make_train_step finds the cycle of a replaced transformation...
  step = optax_profit.make_train_step(quadratic_loss, kept[1], donate=False)
  _, _, metrics = step(PARAMS, tx.init(PARAMS), jnp.zeros((3,)))
  assert metrics["loss"].shape == (3,) and step.calls == {"cycle": 1, "generic": 0}
  # ...and refuses to guess one for another `update`.
  other_update = tx._replace(update=lambda g, s, p=None, **kw: tx.update(g, s, p))
  assert optax_profit.profit_spec(other_update) is None
  with pytest.raises(AttributeError, match="no spec"):
    other_update.spec  # noqa: B018
  with pytest.raises(TypeError, match="cycle_length"):
    optax_profit.make_train_step(quadratic_loss, other_update)


@pytest.mark.parametrize("jit", [False, True])
def test_gradient_and_params_of_different_shapes_name_the_leaf(jit):
  tx = optax_profit.profit(optax.sgd(0.1), ref=0.01)
  state = tx.init(PARAMS)
  update = jax.jit(tx.update) if jit else tx.update
  bad = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(2)}
  with pytest.raises(ValueError, match=r"\['w'\].*\(2, 3\).*\(2, 2\)"):
    update(bad, state, PARAMS)
  with pytest.raises(ValueError, match=r"only in params: \[\"\['b'\]\"\]"):
    update({"w": PARAMS["w"]}, state, PARAMS)


def test_donating_params_and_state_works():
  tx = optax_profit.profit(optax.adamw(0.1), ref=0.01)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state, target):
    grads = jax.grad(quadratic_loss)(params, target)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = jax.tree.map(jnp.copy, PARAMS)
  state = tx.init(params)
  for t in range(4):
    params, state = step(params, state, jnp.float32(t))
  assert int(state.count) == 4


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("main", [optax.sgd(0.1), optax.adamw(0.1)])
def test_bfloat16_params_keep_bfloat16(main):
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
  tx = optax_profit.profit(main, ref=0.05)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for t in range(4):
    grads = jax.grad(quadratic_loss)(params, jnp.bfloat16(t))
    updates, state = update(grads, state, params)
    for u in jax.tree.leaves(updates):
      assert u.dtype == jnp.bfloat16
    params = optax.apply_updates(params, updates)
  for leaf in jax.tree.leaves((params, state.theta_ref)):
    assert leaf.dtype == jnp.bfloat16
  assert state.diagnostics.omega.dtype == jnp.float32
  assert state.diagnostics.delta_norm.dtype == jnp.float32
  assert (
    np.isfinite(float(state.diagnostics.omega))
    and float(state.diagnostics.delta_norm) > 0
  )


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
def test_state_shape_dtype_stability_under_cond(dtype):
  """As optax's contrib harness: the state survives a `lax.cond` round trip."""
  with jax.enable_x64(dtype == jnp.float64):
    tx = optax_profit.profit(optax.adam(0.1), ref=0.01)
    params = jnp.array([-1.0, 10.0, 1.0], dtype=dtype)

    @jax.jit
    def step(params, state):
      grads = jax.grad(lambda p: jnp.sum((p - 1.0) ** 2))(params)
      pred = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
      updates, state = jax.lax.cond(
        pred, lambda: tx.update(grads, state, params), lambda: (params, state)
      )
      return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(3):
      params, state = step(params, state)
      assert params.dtype == dtype


# ------------------------------------------------------------------ degenerate
def test_zero_reference_rate_and_zero_gradients_give_no_nan():
  tx = optax_profit.profit(optax.adam(0.1), ref=0.0)
  state = tx.init(PARAMS)
  params = PARAMS
  update = jax.jit(tx.update)
  for t in range(4):
    grads = jax.grad(quadratic_loss)(params, jnp.float32(t))
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert float(state.diagnostics.delta_norm) == 0.0 and not bool(
    state.diagnostics.projected
  )
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  for _ in range(2):
    updates, state = update(zeros, state, params)
    chex.assert_tree_all_finite(updates)
    params = optax.apply_updates(params, updates)
  chex.assert_tree_all_finite((params, state))


# ------------------------------------------------------------------ harness
def test_extra_args_are_accepted_and_no_recompilation():
  """As optax's contrib harness: unexpected extra args; one compilation."""
  tx = optax_profit.profit(optax.adam(0.1), ref=0.01, n_ref=2)

  @jax.jit
  def step(params, state):
    grads = jax.grad(quadratic_loss)(params, 1.0)
    updates, state = tx.update(
      grads, state, params, unexpected_extra_args_your_optimizer_doesnt_expect=1
    )
    return optax.apply_updates(params, updates), state

  params, state = step(PARAMS, tx.init(PARAMS))
  for _ in range(4):  # every phase of the cycle, through the same executable
    params, state = step(params, state)
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_extra_args_reach_the_main_optimizer():
  """`value` is forwarded: optax.contrib.reduce_on_plateau needs it."""
  main = optax.chain(optax.sgd(1.0), optax.contrib.reduce_on_plateau(patience=0))
  tx = optax_profit.profit(main, ref=0.01)
  state = tx.init(PARAMS)
  params = PARAMS
  for t in range(2):
    grads = jax.grad(quadratic_loss)(params, 0.0)
    updates, state = tx.update(grads, state, params, value=jnp.float32(10.0 - t))
    params = optax.apply_updates(params, updates)
  assert float(optax.tree.get(state.main_state, "best_value")) == 9.0


def test_inject_hyperparams_around_profit():
  """`ref` injected as a hyperparameter (n_ref static) matches plain profit."""
  factory = optax.inject_hyperparams(optax_profit.profit, static_args=("n_ref",))
  tx_inject = factory(main=optax.adam(0.1), ref=0.01, n_ref=2)
  tx_plain = optax_profit.profit(optax.adam(0.1), ref=0.01, n_ref=2)
  s_inject, s_plain = jax.jit(tx_inject.init)(PARAMS), jax.jit(tx_plain.init)(PARAMS)
  p_inject = p_plain = PARAMS
  for t in range(6):
    g = jax.grad(quadratic_loss)(p_plain, jnp.float32(t))
    u_inject, s_inject = jax.jit(tx_inject.update)(g, s_inject, p_inject)
    u_plain, s_plain = jax.jit(tx_plain.update)(g, s_plain, p_plain)
    chex.assert_trees_all_close(u_inject, u_plain, rtol=1e-6, atol=1e-7)
    p_inject = optax.apply_updates(p_inject, u_inject)
    p_plain = optax.apply_updates(p_plain, u_plain)
  # The injected reference rate can be changed between steps.
  assert float(s_inject.hyperparams["ref"]) == pytest.approx(0.01)


def test_traced_n_ref_under_inject_hyperparams():
  """Without static_args, n_ref is traced: the phase arithmetic still works."""
  factory = optax.inject_hyperparams(optax_profit.profit)
  tx_inject = factory(main=optax.sgd(0.1), ref=0.01, n_ref=2)
  tx_plain = optax_profit.profit(optax.sgd(0.1), ref=0.01, n_ref=2)
  s_inject, s_plain = tx_inject.init(PARAMS), tx_plain.init(PARAMS)
  p = PARAMS
  for t in range(6):
    g = jax.grad(quadratic_loss)(p, jnp.float32(t))
    u_inject, s_inject = jax.jit(tx_inject.update)(g, s_inject, p)
    u_plain, s_plain = jax.jit(tx_plain.update)(g, s_plain, p)
    chex.assert_trees_all_close(u_inject, u_plain, rtol=1e-6, atol=1e-7)
    p = optax.apply_updates(p, u_plain)


def test_inject_hyperparams_ref_schedule_refused_or_passed_through():
  """inject_hyperparams would clock a `ref` schedule on every call; refused.
  With static_args=("ref",) the schedule counts reference steps, as in
  profit(ref=schedule)."""
  schedule = optax.linear_schedule(0.02, 0.0, 4)
  with pytest.raises(ValueError, match=r"static_args=\('ref',\)"):
    optax.inject_hyperparams(optax_profit.profit)(optax.sgd(0.1), ref=schedule).init(
      PARAMS
    )
  with pytest.raises(ValueError, match="`n_ref` cannot be a schedule"):
    optax.inject_hyperparams(optax_profit.profit)(
      optax.sgd(0.1), ref=0.01, n_ref=lambda count: 2
    ).init(PARAMS)
  factory = optax.inject_hyperparams(optax_profit.profit, static_args=("ref",))
  tx = factory(main=optax.sgd(0.1), ref=schedule, n_ref=2)
  state, p = tx.init(PARAMS), PARAMS
  # Reference steps k = 0, 1, 2, 3 (calls 0, 1, 3, 4) use schedule(k).
  for k in (0, 1, None, 2, 3):  # per call
    g = jax.tree.map(jnp.ones_like, PARAMS)
    u, state = jax.jit(tx.update)(g, state, p)
    if k is not None:
      np.testing.assert_allclose(u["b"], -float(schedule(k)) * np.ones(2), rtol=1e-6)
    p = optax.apply_updates(p, u)


def test_traced_float_n_ref_is_refused():
  """inject_hyperparams traces n_ref=2.5 as a float: refused, not a cycle
  that never takes its main step."""
  tx = optax.inject_hyperparams(optax_profit.profit)(
    optax.sgd(0.1), ref=0.01, n_ref=2.5
  )
  with pytest.raises(TypeError, match="`n_ref` must be an int, got a traced float"):
    jax.jit(tx.init)(PARAMS)
  with pytest.raises(TypeError, match="`n_ref` must be an int"):
    tx.init(PARAMS)  # concrete: the value is checked


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(
  "built, used, match",
  [
    (dict(storage="copy"), dict(), "built with storage='copy', but this profit has"),
    (dict(), dict(storage="copy"), "built with storage='delta', but this profit has"),
    (
      dict(),
      dict(delta_dtype=jnp.bfloat16),
      r"\['b'\] of the optimizer state's `delta` is float32\[2\], but this profit "
      r"expects bfloat16\[2\]: the state was built with another delta_dtype",
    ),
  ],
)
def test_state_of_another_storage_is_refused(built, used, match, jit):
  state = optax_profit.profit(optax.sgd(0.1), ref=0.01, **built).init(PARAMS)
  tx = optax_profit.profit(optax.sgd(0.1), ref=0.01, **used)
  update = jax.jit(tx.update) if jit else tx.update
  with pytest.raises(ValueError, match=match):
    update(PARAMS, state, PARAMS)


@pytest.mark.parametrize(
  "built, used, match",
  [
    (dict(n_ref=1), dict(n_ref=2), "built for n_ref=1, but this profit has n_ref=2"),
    (
      dict(warmup_steps=3),
      dict(warmup_steps=0),
      "built for warmup_steps=3, but this profit has warmup_steps=0",
    ),
  ],
)
def test_state_of_another_cycle_is_refused(built, used, match):
  """A restored state recorded for another n_ref / warmup_steps: refused by
  an eager update and by make_train_step (on the host); a jitted update
  cannot see the recorded value (docs/compatibility.md)."""
  old = optax_profit.profit(optax.sgd(0.1), ref=0.01, **built)
  state = old.init(PARAMS)
  state = old.update(PARAMS, state, PARAMS)[1]  # mid-cycle
  tx = optax_profit.profit(optax.sgd(0.1), ref=0.01, **used)
  with pytest.raises(ValueError, match=match):
    tx.update(PARAMS, state, PARAMS)
  step = optax_profit.make_train_step(quadratic_loss, tx, donate=False)
  batches = jnp.zeros((tx.spec.cycle_length,))
  with pytest.raises(ValueError, match=match):
    step(PARAMS, state, batches)
  assert int(state.cycle_length) == old.spec.cycle_length


def test_vmap_over_reference_rates():
  """A sweep of reference rates in one vmapped update."""
  tx = lambda lr: optax_profit.profit(optax.sgd(0.1), ref=lr)
  rates = jnp.array([0.0, 0.01, 0.1])

  def run(lr):
    t = tx(lr)
    params, state = PARAMS, t.init(PARAMS)
    for i in range(4):
      g = jax.grad(quadratic_loss)(params, jnp.float32(i))
      u, state = t.update(g, state, params)
      params = optax.apply_updates(params, u)
    return params

  batched = jax.jit(jax.vmap(run))(rates)
  for i, lr in enumerate([0.0, 0.01, 0.1]):
    single = run(jnp.float32(lr))
    chex.assert_trees_all_close(
      jax.tree.map(lambda x, i=i: x[i], batched), single, rtol=1e-6
    )


def test_tiny_reference_rate_still_projects_in_float32():
  """ref=1e-20: delta ~ 1e-20 and ||delta||^2 ~ 1e-40 would underflow to 0."""
  params = {"w": jnp.array([1.0, -2.0, 0.5], jnp.float32)}
  g = {"w": jnp.array([0.3, -0.1, 0.2], jnp.float32)}
  tx = optax_profit.profit(optax.sgd(0.1), ref=1e-20)
  updates, state = tx.update(g, tx.init(params), params)
  _, state = tx.update(g, state, optax.apply_updates(params, updates))
  # delta = -1e-20 g and the same gradient: omega < 0, all of g is removed.
  assert bool(state.diagnostics.projected)
  np.testing.assert_allclose(float(state.diagnostics.omega), -1e-20 * 0.14, rtol=1e-5)
  np.testing.assert_allclose(
    float(state.diagnostics.delta_norm), 1e-20 * np.sqrt(0.14), rtol=1e-5
  )
  np.testing.assert_allclose(float(state.diagnostics.removed_fraction), 1.0, rtol=1e-5)
