"""`eval_params` and `cycle_ended` through every wrapper, against NumPy.

The expected weights come from the float64 NumPy Algorithm 1: after a
reference step, the params the cycle started from; otherwise the params.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_profit
from tests import numpy_reference as ref_impl
from tests.lib.test_algorithm import assert_trajectories_close, jax_loss

N_REF = 2
WARMUP = 1
NUM_CALLS = 10


# float64, the NumPy reference's precision (the `x64` fixture of conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


def expected(rec, p0, n_ref=N_REF, warmup=WARMUP):
  """(weights to evaluate, cycle ended) after each call of ``rec``."""
  cycle = n_ref + 1
  weights, ended = [], []
  for i in range(len(rec.params)):
    pos = (i - warmup) % cycle
    if i >= warmup and pos < n_ref:  # after a reference step
      start = i - pos  # the call that started the cycle
      weights.append(rec.params[start - 1] if start else p0)
      ended.append(False)
    else:
      weights.append(rec.params[i])
      ended.append(True)
  return ref_impl.Record(params=weights), ended


def numpy_run(batches, n_ref=N_REF, warmup=WARMUP, **kwargs):
  rec = ref_impl.run_on_batches(batches, n_ref, warmup_steps=warmup, **kwargs)
  return ref_impl.init_params(), rec


def run(tx, batches, n=NUM_CALLS):
  """Per-call loop; returns eval_params and cycle_ended after every call."""
  params = jax.tree.map(jnp.asarray, ref_impl.init_params())
  state = tx.init(params)
  update = jax.jit(tx.update)
  grad = jax.jit(jax.grad(jax_loss))
  evaluate = jax.jit(optax_profit.eval_params)
  weights, ended = [], []
  for i in range(n):
    updates, state = update(grad(params, batches[i]), state, params)
    params = optax.apply_updates(params, updates)
    weights.append(evaluate(params, state))
    ended.append(bool(optax_profit.cycle_ended(state)))
  return weights, ended


def profit(**kwargs):
  kwargs = {"n_ref": N_REF, "warmup_steps": WARMUP, **kwargs}
  return optax_profit.profit(optax.adam(0.05), ref=0.05, **kwargs)


@pytest.mark.parametrize(
  "make_tx",
  [
    pytest.param(profit, id="delta"),
    pytest.param(lambda: profit(storage="copy"), id="copy"),
    pytest.param(lambda: optax.chain(optax.clip(1e3), profit()), id="chain"),
    pytest.param(
      lambda: optax.inject_hyperparams(optax_profit.profit, static_args=("n_ref",))(
        optax.adam(0.05), ref=0.05, n_ref=N_REF, warmup_steps=WARMUP
      ),
      id="inject_hyperparams",
    ),
  ],
)
def test_eval_params_is_theta_ref_inside_a_cycle(make_tx):
  batches = ref_impl.make_batches(NUM_CALLS, seed=50)
  p0, rec = numpy_run(batches)
  want, want_ended = expected(rec, p0)
  weights, ended = run(make_tx(), batches)
  assert_trajectories_close(weights, want)
  assert ended == want_ended
  assert want_ended.count(False) == 6  # the test sees both phases


def test_eval_params_under_multisteps():
  """MultiSteps(profit, 2): profit sees the mean gradient of two batches."""
  batches = ref_impl.make_batches(2 * NUM_CALLS, seed=51)
  p0 = ref_impl.init_params()
  rec = ref_impl.run_on_batches(batches, N_REF, per_call=2, warmup_steps=WARMUP)
  want, want_ended = expected(rec, p0)
  weights, ended = run(optax.MultiSteps(profit(), 2), batches, 2 * NUM_CALLS)
  # Outer call 2i+1 runs profit's call i; call 2i only accumulates. (The
  # tolerance: MultiSteps' running mean rounds differently from (a + b) / 2.)
  assert_trajectories_close(weights[1::2], want, tol=1e-7)
  assert_trajectories_close(
    weights[2::2], ref_impl.Record(params=want.params[:-1]), tol=1e-7
  )
  assert ended[1::2] == want_ended and ended[2::2] == want_ended[:-1]


def test_eval_params_under_multi_transform_maps_the_subset():
  """PROFIT on W only: b stays as it is (frozen here), W is mapped."""
  batches = ref_impl.make_batches(NUM_CALLS, seed=52)
  p0, rec = numpy_run(batches, trainable=("W",))
  want, want_ended = expected(rec, p0)
  tx = optax.multi_transform(
    {"profit": profit(), "frozen": optax.set_to_zero()}, {"W": "profit", "b": "frozen"}
  )
  weights, ended = run(tx, batches)
  assert_trajectories_close(weights, want)
  assert ended == want_ended


def test_eval_params_flax_train_state_mnist_epoch_end():
  """Flax's MNIST example evaluates at epoch ends; with 7 steps per epoch
  and n_ref=1 the epoch ends after a reference step: eval_params gives the
  weights the cycle started from, not the temporary ones."""
  from flax.training import train_state

  batches = ref_impl.make_batches(7, seed=53)
  p0, rec = numpy_run(batches, n_ref=1, warmup=0)
  state = train_state.TrainState.create(
    apply_fn=None,
    params=jax.tree.map(jnp.asarray, p0),
    tx=optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=1),
  )

  @jax.jit
  def step(state, batch):
    return state.apply_gradients(grads=jax.grad(jax_loss)(state.params, batch))

  for batch in batches:
    state = step(state, batch)
  want = rec.params[5]  # after the last main step, not after call 7
  for found in (
    optax_profit.eval_params(state.params, state.opt_state),
    optax_profit.eval_params(state.params, state),  # the TrainState itself
  ):
    assert_trajectories_close([found], ref_impl.Record(params=[want]))
  assert not bool(optax_profit.cycle_ended(state))
  assert np.max(np.abs(np.asarray(state.params["W"]) - want["W"])) > 1e-3


def test_eval_params_nnx_optimizer():
  from flax import nnx

  batches = ref_impl.make_batches(NUM_CALLS, seed=54)
  p0, rec = numpy_run(batches)
  want, want_ended = expected(rec, p0)
  model = nnx.Linear(3, 2, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
  model.kernel[...] = jnp.asarray(p0["W"])
  model.bias[...] = jnp.asarray(p0["b"])
  optimizer = nnx.Optimizer(model, profit(), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, batch):
    def loss(model):
      pred = jnp.tanh(model(batch["x"]))
      return 0.5 * jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))

    optimizer.update(model, nnx.grad(loss)(model))

  for i, batch in enumerate(batches):
    step(model, optimizer, jax.tree.map(jnp.asarray, batch))
    found = optax_profit.eval_params(nnx.state(model, nnx.Param), optimizer.opt_state)
    assert isinstance(found["kernel"], nnx.Param)  # variables stay variables
    eval_model = nnx.clone(model)
    nnx.update(eval_model, found)
    got = {"W": eval_model.kernel[...], "b": eval_model.bias[...]}
    assert_trajectories_close([got], ref_impl.Record(params=[want.params[i]]))
    assert bool(optax_profit.cycle_ended(optimizer.opt_state)) == want_ended[i]


def test_eval_params_errors():
  p0 = jax.tree.map(jnp.asarray, ref_impl.init_params())
  with pytest.raises(ValueError, match=r"holds no optax_profit\.ProfitState"):
    optax_profit.eval_params(p0, optax.adam(0.1).init(p0))
  with pytest.raises(ValueError, match=r"holds no optax_profit\.ProfitState"):
    optax_profit.cycle_ended(optax.adam(0.1).init(p0))
  tx = optax.chain(profit(), profit())
  with pytest.raises(ValueError, match=r"Several PROFIT states cover the leaves"):
    optax_profit.eval_params(p0, tx.init(p0))
  with pytest.raises(ValueError, match="do not have the structure"):
    optax_profit.eval_params({"W": p0["W"]}, profit().init(p0))


def test_examples_evaluate_eval_params():
  """The examples' evaluation helpers give theta_ref after a reference step
  (PROFIT) and the params otherwise (the other methods)."""
  from examples.cifar import optimizers
  from examples.cifar.configs import default
  from examples.toy_regression import train as toy

  p0 = {"W": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  grads = {"W": jnp.full((3, 2), 0.5), "b": jnp.ones(2)}
  config = default.Config()
  warmup = config.warmup_epochs * 4
  for name in ("profit", "adam"):
    opt = optimizers.create_optimizer(name, 1e-2, config, steps_per_epoch=4)
    params, state = p0, opt.tx.init(p0)
    for _ in range(warmup + 1):  # the last call: a cycle's first reference step
      before = params
      updates, state = opt.tx.update(grads, state, params)
      params = optax.apply_updates(params, updates)
    assert np.max(np.abs(params["W"] - before["W"])) > 1e-5
    want = before if name == "profit" else params
    if name == "profit":
      assert not bool(optax_profit.cycle_ended(state))
    for got in (opt.eval_view(params, state), toy.eval_weights(params, state)):
      np.testing.assert_allclose(got["W"], want["W"], rtol=1e-6)
      np.testing.assert_allclose(got["b"], want["b"], rtol=1e-6)
