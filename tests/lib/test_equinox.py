"""Equinox: the patterns of Equinox's own examples, against NumPy.

Equinox's MNIST example calls ``optim.update(grads, opt_state,
eqx.filter(model, eqx.is_array))`` with the gradient of
``eqx.filter_value_and_grad`` (None where the model has non-array leaves);
the whole model as ``params`` works as well with ``optax.adamw``.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_profit
from tests import numpy_reference as ref_impl
from tests.lib.test_algorithm import assert_trajectories_close
from tests.lib.test_evaluation import expected

N_REF = 2
NUM_CALLS = 8


# float64, the NumPy reference's precision (the `x64` fixture of conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


class Model(eqx.Module):
  """``tanh(x @ W + b)``, with a non-array leaf (the activation)."""

  W: jax.Array
  b: jax.Array
  activation: Callable = jnp.tanh

  def __call__(self, x):
    return self.activation(x @ self.W + self.b)


def loss(model, batch):
  return 0.5 * jnp.mean(jnp.sum((model(batch["x"]) - batch["y"]) ** 2, axis=-1))


def numpy_run(batches):
  return ref_impl.init_params(), ref_impl.run_on_batches(batches, N_REF, wd=0.1)


def as_dict(model):
  return {"W": model.W, "b": model.b}


def make_tx():
  return optax_profit.profit(optax.adamw(0.05, weight_decay=0.1), ref=0.05, n_ref=N_REF)


@pytest.mark.parametrize("whole_model", [False, True], ids=["filtered", "whole"])
def test_equinox_mnist_pattern(whole_model):
  batches = ref_impl.make_batches(NUM_CALLS, seed=60)
  p0, rec = numpy_run(batches)
  want, _ = expected(rec, p0, n_ref=N_REF, warmup=0)
  model = Model(jnp.asarray(p0["W"]), jnp.asarray(p0["b"]))
  optim = make_tx()
  opt_state = optim.init(eqx.filter(model, eqx.is_array))

  @eqx.filter_jit
  def make_step(model, opt_state, batch):
    value, grads = eqx.filter_value_and_grad(loss)(model, batch)
    assert grads.activation is None
    params = model if whole_model else eqx.filter(model, eqx.is_array)
    updates, opt_state = optim.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    return model, opt_state, value

  traj, evaluated = [], []
  for batch in batches:
    model, opt_state, _ = make_step(model, opt_state, jax.tree.map(jnp.asarray, batch))
    assert model.activation is jnp.tanh  # untouched
    traj.append(as_dict(model))
    # The weights to evaluate, as a model (its non-array leaves as they are).
    eval_model = optax_profit.eval_params(model, opt_state)
    assert eval_model.activation is jnp.tanh
    evaluated.append(as_dict(eval_model))
  assert_trajectories_close(traj, rec)
  assert_trajectories_close(evaluated, want)


def test_equinox_frozen_array_needs_a_matching_state():
  """A None gradient on an array the state holds: refused, as adamw does."""
  model = Model(jnp.ones((3, 2)), jnp.zeros(2))
  optim = make_tx()
  opt_state = optim.init(eqx.filter(model, eqx.is_array))
  grads = eqx.filter_grad(loss)(model, {"x": jnp.ones((4, 3)), "y": jnp.ones((4, 2))})
  grads = eqx.tree_at(lambda g: g.b, grads, replace=None, is_leaf=lambda x: x is None)
  with pytest.raises(ValueError, match=r"leaves only in the state: \['\.b'\]"):
    optim.update(grads, opt_state, model)
  # With a state for W only, b gets no update and keeps no state.
  spec = eqx.tree_at(lambda m: m.b, eqx.filter(model, eqx.is_array), replace=None)
  opt_state = optim.init(spec)
  updates, _ = optim.update(grads, opt_state, model)
  assert updates.b is None and updates.W.shape == (3, 2)


def test_make_train_step_needs_partitioned_params():
  model = Model(jnp.ones((3, 2)), jnp.zeros(2))
  tx = make_tx()
  step = optax_profit.make_train_step(loss, tx)
  batches = {"x": jnp.ones((3, 4, 3)), "y": jnp.ones((3, 4, 2))}
  with pytest.raises(TypeError, match=r"\.activation \(.*eqx.partition"):
    step(model, tx.init(eqx.filter(model, eqx.is_array)), batches)


def test_make_train_step_equinox_partition_recipe():
  """partition/combine; partition shares the model's buffers, so copy the
  params before a donating step or the model's arrays are deleted."""
  batches = ref_impl.make_batches(NUM_CALLS - NUM_CALLS % (N_REF + 1), seed=61)
  p0, rec = numpy_run(batches)
  model = Model(jnp.asarray(p0["W"]), jnp.asarray(p0["b"]))
  params, static = eqx.partition(model, eqx.is_array)
  assert params.W is model.W  # shared: what donation would delete
  tx = make_tx()
  step = optax_profit.make_train_step(
    lambda p, batch: loss(eqx.combine(p, static), batch), tx
  )
  params = jax.tree.map(jnp.copy, params)
  opt_state = tx.init(params)
  cycle = N_REF + 1
  for c in range(len(batches) // cycle):
    chunk = jax.tree.map(
      lambda *xs: jnp.stack(xs), *map(f64, batches[c * cycle : (c + 1) * cycle])
    )
    params, opt_state, _ = step(params, opt_state, chunk)
  assert not model.W.is_deleted()  # the copy was donated, not the model
  trained = eqx.combine(params, static)
  assert_trajectories_close([as_dict(trained)], ref_impl.Record(params=rec.params[-1:]))
  assert step.calls == {"cycle": len(batches) // cycle, "generic": 0}

  # Without the copy, the donated params are the model's own arrays.
  shared, _ = eqx.partition(model, eqx.is_array)
  step(shared, tx.init(shared), chunk)
  assert model.W.is_deleted()


def f64(batch):
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), batch)


def test_empty_subtrees():
  """PROFIT over nothing: `{}`, a multi_transform label of no leaf, an
  all-False mask. The other leaves get exactly adam's updates."""
  tx = make_tx()
  updates, state = tx.update({}, tx.init({}), {})
  assert updates == {} and int(state.count) == 1
  params = {"W": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  grads = {"W": jnp.full((3, 2), 0.5), "b": jnp.ones(2)}
  want, _ = optax.adam(0.1).update(grads, optax.adam(0.1).init(params), params)
  for wrapped in (
    optax.multi_transform(
      {"profit": tx, "adam": optax.adam(0.1)}, {"W": "adam", "b": "adam"}
    ),
    optax.chain(
      optax.masked(tx, {"W": False, "b": False}),
      optax.masked(optax.adam(0.1), {"W": True, "b": True}),
    ),
  ):
    state = wrapped.init(params)
    for _ in range(2):
      updates, state = jax.jit(wrapped.update)(grads, state, params)
    # The second update of adam from its first state is not `want`; compare
    # the first call only.
    first, _ = wrapped.update(grads, wrapped.init(params), params)
    np.testing.assert_allclose(first["W"], want["W"])
    np.testing.assert_allclose(first["b"], want["b"])


def test_python_scalar_leaves_as_optax_treats_them():
  """A Python-float leaf: PROFIT gives what it gives a 0-d array."""
  tx = make_tx()
  grads = {"s": 0.5, "v": jnp.array([1.0, -1.0])}
  as_array = {"s": jnp.asarray(2.0), "v": jnp.array([1.0, 2.0])}
  params = {"s": 2.0, "v": jnp.array([1.0, 2.0])}
  state, want_state = tx.init(params), tx.init(as_array)
  for _ in range(N_REF + 1):
    updates, state = tx.update(grads, state, params)
    want, want_state = tx.update(jax.tree.map(jnp.asarray, grads), want_state, as_array)
    np.testing.assert_allclose(updates["s"], want["s"], rtol=1e-12)
    np.testing.assert_allclose(updates["v"], want["v"], rtol=1e-12)
    params = optax.apply_updates(params, updates)
    as_array = optax.apply_updates(as_array, want)
  # and against plain SGD for the reference step: -ref * g
  first, _ = tx.update(grads, tx.init({"s": 2.0, "v": jnp.ones(2)}), params)
  np.testing.assert_allclose(first["s"], -0.05 * 0.5, rtol=1e-12)
