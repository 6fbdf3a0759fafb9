"""`make_train_step`: one scanned PROFIT cycle per call."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_profit
from tests import numpy_reference as ref_impl
from tests.lib.test_algorithm import assert_trajectories_close, jax_loss


def stack(batches):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *batches)


# float64, the NumPy reference's precision (the `x64` fixture of conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


@pytest.mark.parametrize("n_ref", [1, 3])
# 1, 2, 3: warm-ups that end mid-call; later calls start mid-cycle.
@pytest.mark.parametrize("warmup_steps", [0, 4, 1, 2, 3])
def test_equals_numpy_algorithm_and_per_batch_loop(n_ref, warmup_steps):
  cycle = n_ref + 1
  num_calls = 5
  batches = ref_impl.make_batches(num_calls * cycle, seed=21 + n_ref)
  p0 = ref_impl.init_params()
  rec = ref_impl.run_on_batches(batches, n_ref, wd=0.3, warmup_steps=warmup_steps)
  tx = optax_profit.profit(
    optax.adamw(0.05, weight_decay=0.3),
    ref=0.05,
    n_ref=n_ref,
    warmup_steps=warmup_steps,
  )
  step = optax_profit.make_train_step(jax_loss, tx)
  params = jax.tree.map(jnp.asarray, p0)
  opt_state = tx.init(params)
  traj = []
  for c in range(num_calls):
    chunk = batches[c * cycle : (c + 1) * cycle]
    params, opt_state, metrics = step(params, opt_state, stack(chunk))
    traj.append(jax.tree.map(np.array, params))  # params are donated next
    # Per-batch losses at the params each batch saw.
    want = [
      ref_impl.loss(rec.params[c * cycle + j - 1] if c * cycle + j else p0, b)
      for j, b in enumerate(chunk)
    ]
    np.testing.assert_allclose(metrics["loss"], want, rtol=1e-10)
  assert_trajectories_close(
    traj, ref_impl.Record(params=rec.params[cycle - 1 :: cycle])
  )
  assert int(opt_state.count) == num_calls * cycle
  # Every call that starts past the warm-up takes a static cycle.
  past = sum(c * cycle >= warmup_steps for c in range(num_calls))
  assert step.calls == {"cycle": past, "generic": num_calls - past}
  # The diagnostics of the last main step.
  np.testing.assert_allclose(float(metrics["omega"]), rec.omegas[-1], rtol=1e-9)
  assert bool(metrics["projected"]) == rec.projected[-1]


def test_odd_warmup_then_every_call_takes_the_static_cycle():
  """Issue 20 point 12: warmup_steps=3, n_ref=1 took the static cycle on 0
  of 20 calls; now every call that starts past the warm-up takes it."""
  batches = ref_impl.make_batches(40, seed=41)
  p0 = ref_impl.init_params()
  rec = ref_impl.run_on_batches(batches, 1, warmup_steps=3)
  tx = optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=1, warmup_steps=3)
  step = optax_profit.make_train_step(jax_loss, tx)
  params = jax.tree.map(jnp.asarray, p0)
  opt_state = tx.init(params)
  traj = []
  for c in range(20):
    params, opt_state, _ = step(params, opt_state, stack(batches[2 * c : 2 * c + 2]))
    traj.append(jax.tree.map(np.array, params))
  # Calls at counts 0 and 2 hold warm-up steps; the 18 others, from count 4
  # on, each finish a cycle and start the next.
  assert step.calls == {"cycle": 18, "generic": 2}
  assert_trajectories_close(traj, ref_impl.Record(params=rec.params[1::2]))


def test_has_aux_and_chain_with_cycle_length():
  def loss_with_aux(params, batch):
    loss = jax_loss(params, batch)
    return loss, {"twice": 2 * loss}

  batches = ref_impl.make_batches(4, seed=30)
  p0 = jax.tree.map(jnp.asarray, ref_impl.init_params())
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=1),
  )
  with pytest.raises(TypeError, match="cycle_length"):
    optax_profit.make_train_step(loss_with_aux, tx, has_aux=True)
  step = optax_profit.make_train_step(loss_with_aux, tx, has_aux=True, cycle_length=2)
  state = tx.init(p0)
  _params, state, metrics = step(p0, state, stack(batches[:2]))
  np.testing.assert_allclose(metrics["aux"]["twice"], 2 * metrics["loss"], rtol=1e-12)
  assert set(metrics) == {
    "loss",
    "aux",
    "omega",
    "projected",
    "delta_norm",
    "cosine",
    "removed_fraction",
  }


def test_plain_optimizer_has_no_diagnostics():
  p0 = jax.tree.map(jnp.asarray, ref_impl.init_params())
  tx = optax.adamw(1e-3)
  step = optax_profit.make_train_step(jax_loss, tx, cycle_length=3)
  _, _, metrics = step(p0, tx.init(p0), stack(ref_impl.make_batches(3, seed=1)))
  assert set(metrics) == {"loss"}


def test_wrong_leading_size_and_ragged_batches():
  p0 = jax.tree.map(jnp.asarray, ref_impl.init_params())
  tx = optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=2)
  step = optax_profit.make_train_step(jax_loss, tx)
  state = tx.init(p0)
  batches = stack(ref_impl.make_batches(2, seed=2))
  with pytest.raises(
    ValueError, match=r"cycle of 3 batches.*sizes are \['x'\]: 2, \['y'\]: 2\."
  ):
    step(p0, state, batches)
  ragged = {"x": jnp.zeros((3, 4, 3)), "y": jnp.zeros((2, 4, 2))}
  with pytest.raises(ValueError, match=r"sizes are \['x'\]: 3, \['y'\]: 2\."):
    step(p0, state, ragged)
  with pytest.raises(ValueError, match="scalar"):
    step(p0, state, {"x": jnp.zeros((3, 4, 3)), "y": jnp.float32(0)})
  with pytest.raises(ValueError, match="no array leaves"):
    step(p0, state, {})
  with pytest.raises(ValueError, match="cycle_length"):
    optax_profit.make_train_step(jax_loss, tx, cycle_length=0)


def test_params_and_state_are_donated():
  p0 = jax.tree.map(jnp.asarray, ref_impl.init_params())
  tx = optax_profit.profit(optax.adam(0.05), ref=0.05)
  step = optax_profit.make_train_step(jax_loss, tx)
  state = tx.init(p0)
  _params, state, _ = step(p0, state, stack(ref_impl.make_batches(2, seed=3)))
  assert all(x.is_deleted() for x in jax.tree.leaves(p0))


def test_cycle_length_must_agree_with_n_ref():
  tx = optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=2)
  with pytest.raises(ValueError, match=r"cycle_length=4.*n_ref \+ 1 = 3"):
    optax_profit.make_train_step(jax_loss, tx, cycle_length=4)
  optax_profit.make_train_step(jax_loss, tx, cycle_length=3)  # agrees: fine


def test_n_ref_as_a_zero_dim_array_works_with_make_train_step():
  tx = optax_profit.profit(optax.adam(0.05), ref=0.05, n_ref=jnp.int32(2))
  step = optax_profit.make_train_step(jax_loss, tx)
  p0 = jax.tree.map(jnp.asarray, ref_impl.init_params())
  _, state, metrics = step(p0, tx.init(p0), stack(ref_impl.make_batches(3, seed=4)))
  assert metrics["loss"].shape == (3,) and int(state.count) == 3


def _scaled_sgd(lr):
  """SGD whose step is multiplied by the extra argument ``ref_scale``."""

  def update(updates, state, params=None, *, ref_scale=1.0, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda g: -lr * ref_scale * g, updates), state

  return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)


@pytest.mark.parametrize("warmup_steps", [0, 2])  # 2: the first call is generic
def test_extra_args_reach_main_and_ref_on_every_path(warmup_steps):
  """`step(..., **extra_args)` passes them to `main` (reduce_on_plateau's
  `value`) and `ref` (`ref_scale`), as per-call updates do."""
  main = optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(patience=0))
  tx = optax_profit.profit(main, ref=_scaled_sgd(0.05), warmup_steps=warmup_steps)
  num_calls = 4
  batches = ref_impl.make_batches(2 * num_calls, seed=5)
  p0 = jax.tree.map(jnp.asarray, ref_impl.init_params())

  def extra(c, ref_scale=3.0):
    return dict(value=jnp.float64(5.0 - c), ref_scale=jnp.float64(ref_scale))

  def per_call(ref_scale):
    params, state = p0, tx.init(p0)
    update = jax.jit(tx.update)
    for i, batch in enumerate(batches):
      grads = jax.grad(jax_loss)(params, batch)
      updates, state = update(grads, state, params, **extra(i // 2, ref_scale))
      params = optax.apply_updates(params, updates)
    return params, state

  want, want_state = per_call(3.0)
  params, state = jax.tree.map(jnp.copy, p0), tx.init(p0)
  step = optax_profit.make_train_step(jax_loss, tx)
  for c in range(num_calls):
    params, state, _ = step(
      params, state, stack(batches[2 * c : 2 * c + 2]), **extra(c)
    )
  chex.assert_trees_all_close(params, want, rtol=1e-12, atol=1e-12)
  best = lambda s: float(optax.tree.get(s.main_state, "best_value"))
  assert best(state) == best(want_state) == 5.0 - (num_calls - 1)
  other, _ = per_call(1.0)  # ref_scale mattered
  assert float(jnp.max(jnp.abs(other["W"] - want["W"]))) > 1e-6


@pytest.mark.parametrize("n_ref, offset", [(1, 1), (3, 1), (3, 3)])
def test_mid_cycle_static_step_has_no_device_control_flow_on_gpu(n_ref, offset):
  """The step that finishes a cycle and starts the next: its scans' trip
  counts are static, no phase selection (as the aligned static cycle)."""
  from tests.lib.test_platforms import control_flow

  tx = optax_profit.profit(optax.adamw(1e-3), ref=1e-4, n_ref=n_ref, warmup_steps=1)
  step = optax_profit.make_train_step(jax_loss, tx, donate=False)
  params = jax.tree.map(jnp.asarray, ref_impl.init_params())
  batches = stack(ref_impl.make_batches(n_ref + 1, seed=5))
  rotated = step._rotated(offset)  # pylint: disable=protected-access
  module = jax.export.export(rotated, platforms=["cuda"])(
    params, tx.init(params), batches
  ).mlir_module()
  # Scans over the reference batches before the main step (n_ref - offset)
  # and after the cycle's first one (offset - 1), when there are any.
  scans = int(n_ref - offset > 0) + int(offset - 1 > 0)
  assert control_flow(module) == {"while": scans, "if": 0, "data-dependent case": 0}
