"""`make_train_step`'s static-cycle fast path and the lean per-call `update`.

The fast path (the static cycle of `optax_profit._train_step`) replaces `n_ref + 1` per-call
updates by one cycle whose phases are known statically; `make_train_step`
takes it only from a state at a cycle boundary past the warm-up. These tests
check it against the independent NumPy Algorithm 1 from every kind of starting
state (aligned, mid-cycle, misaligned warm-up, mixed per-call and scanned
calls), and check the compiled memory that motivates it.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_profit
from optax_profit import _train_step
from tests import numpy_reference as ref_impl
from tests.lib.test_algorithm import TOL, jax_loss

# float64, the NumPy reference's precision (the `x64` fixture of conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


def stack(batches):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *batches)


def numpy_record(batches, n_ref, warmup_steps=0):
  return ref_impl.run_on_batches(batches, n_ref, wd=0.3, warmup_steps=warmup_steps)


def make_tx(n_ref, warmup_steps=0, storage="delta"):
  return optax_profit.profit(
    optax.adamw(0.05, weight_decay=0.3),
    ref=0.05,
    n_ref=n_ref,
    warmup_steps=warmup_steps,
    storage=storage,
  )


def assert_params_close(got, want, what):
  for k in want:
    np.testing.assert_allclose(
      np.asarray(got[k]), want[k], rtol=TOL, atol=TOL, err_msg=f"{k} {what}"
    )


def run_schedule(tx, batches, schedule, mode="dispatch"):
  """Consumes ``batches`` with a mix of per-call updates and scanned steps.

  ``schedule`` is a list of ``"call"`` (one per-call ``update``) and
  ``"step"`` (one ``make_train_step`` call of ``n_ref + 1`` batches).
  Returns ``(batches used, params, state)`` after each entry (NumPy copies)
  and the last step's metrics.
  """
  length = tx.spec.cycle_length
  value_and_grad = jax.value_and_grad(jax_loss)
  if mode == "dispatch":  # the public step: chooses on the host
    step = optax_profit.make_train_step(jax_loss, tx)
  else:  # "cycle", "generic" or "auto" (chooses on device)
    step = jax.jit(
      _train_step._build_step(value_and_grad, tx, length, has_aux=False, mode=mode),
      donate_argnums=(0, 1),
      keep_unused=True,
    )
  grad_fn = jax.jit(jax.grad(jax_loss))
  update = jax.jit(tx.update)
  params = jax.tree.map(jnp.asarray, ref_impl.init_params())
  state = tx.init(params)
  i, out = 0, []
  for kind in schedule:
    if kind == "call":
      updates, state = update(grad_fn(params, batches[i]), state, params)
      params = optax.apply_updates(params, updates)
      i += 1
    else:
      params, state, metrics = step(params, state, stack(batches[i : i + length]))
      i += length
    # Copies: params and state are donated to the next step.
    out.append((i, jax.tree.map(np.array, params), jax.tree.map(np.array, state)))
  return out, metrics


@pytest.mark.parametrize("storage", ["delta", "copy"])
@pytest.mark.parametrize("n_ref", [1, 3])
def test_cycle_equals_numpy_and_per_call_loop(n_ref, storage):
  """The bare fast path from an aligned state, cycle after cycle."""
  length = n_ref + 1
  # Seeds where both branches of the projection fire (checked below).
  batches = ref_impl.make_batches(6 * length, seed={1: 40, 3: 41}[n_ref])
  rec = numpy_record(batches, n_ref)
  tx = make_tx(n_ref, storage=storage)
  out, metrics = run_schedule(tx, batches, ["step"] * 6, mode="cycle")
  for i, params, _ in out:
    assert_params_close(params, rec.params[i - 1], f"after {i} batches")
  assert int(out[-1][2].count) == 6 * length
  np.testing.assert_allclose(float(metrics["omega"]), rec.omegas[-1], rtol=1e-9)
  np.testing.assert_allclose(
    float(metrics["delta_norm"]), rec.delta_norms[-1], rtol=1e-9
  )
  assert bool(metrics["projected"]) == rec.projected[-1]
  # Both branches of the projection were exercised.
  assert any(rec.projected) and not all(rec.projected)


@pytest.mark.parametrize("mode", ["dispatch", "auto"])
@pytest.mark.parametrize(
  "n_ref, schedule",
  [
    # Mid-cycle: per-call updates leave the state inside a cycle, scanned
    # steps then run misaligned (generic path), per-call updates realign
    # it and the next scanned steps take the fast path.
    (1, ["call", "step", "step", "call", "step", "step"]),
    (3, ["call", "call", "step", "call", "call", "step", "step"]),
    (3, ["call", "step", "call", "call", "call", "step"]),
  ],
)
def test_auto_equals_numpy_from_any_state(n_ref, schedule, mode):
  """`make_train_step` (host choice) and the on-device choice, mixed with
  per-call updates that leave the state mid-cycle."""
  length = n_ref + 1
  num = sum(1 if k == "call" else length for k in schedule)
  batches = ref_impl.make_batches(num, seed=50 + len(schedule))
  rec = numpy_record(batches, n_ref)
  out, _ = run_schedule(make_tx(n_ref), batches, schedule, mode=mode)
  for i, params, state in out:
    assert_params_close(params, rec.params[i - 1], f"after {i} batches")
    assert int(state.count) == i


@pytest.mark.parametrize("mode", ["dispatch", "auto"])
@pytest.mark.parametrize("n_ref, warmup_steps", [(1, 3), (3, 4), (3, 2), (1, 4)])
def test_auto_with_warmup(n_ref, warmup_steps, mode):
  """Warm-up that is or is not a multiple of the cycle length."""
  length = n_ref + 1
  batches = ref_impl.make_batches(5 * length, seed=60 + warmup_steps)
  rec = numpy_record(batches, n_ref, warmup_steps)
  out, _ = run_schedule(make_tx(n_ref, warmup_steps), batches, ["step"] * 5, mode=mode)
  for i, params, _ in out:
    assert_params_close(params, rec.params[i - 1], f"after {i} batches")


def test_modes_agree_and_cycle_takes_the_fast_path():
  """`auto` from an aligned state is the fast path, not the generic scan.

  With copy storage the fast path leaves the displaced weights of the cycle
  in `theta_ref` (scratch between cycles); per-call updates leave the
  snapshot there.
  """
  n_ref = 2
  batches = ref_impl.make_batches(3 * (n_ref + 1), seed=70)
  runs = {
    mode: run_schedule(
      make_tx(n_ref, storage="copy"), batches, ["step"] * 3, mode=mode
    )[0]
    for mode in ("dispatch", "auto", "cycle", "generic")
  }
  rec = numpy_record(batches, n_ref)
  for mode, out in runs.items():
    for i, params, _ in out:
      assert_params_close(params, rec.params[i - 1], f"{mode}, {i} batches")
  last = {mode: out[-1][2] for mode, out in runs.items()}
  # generic: theta_ref is the snapshot taken at the start of the last cycle.
  chex.assert_trees_all_close(
    last["generic"].theta_ref, rec.params[-(n_ref + 2)], rtol=TOL, atol=TOL
  )
  # The fast path: the weights after the last reference step.
  for mode in ("dispatch", "auto", "cycle"):
    chex.assert_trees_all_close(
      last[mode].theta_ref, rec.params[-2], rtol=TOL, atol=TOL
    )


def test_dispatch_reads_the_count_only_for_a_new_state(monkeypatch):
  """In a loop, the host knows the count: one device read, for a new state."""
  reads = []
  device_get = jax.device_get
  monkeypatch.setattr(jax, "device_get", lambda x: reads.append(1) or device_get(x))
  tx = make_tx(1)
  step = optax_profit.make_train_step(jax_loss, tx)
  batches = stack(ref_impl.make_batches(2, seed=72))
  params = jax.tree.map(jnp.asarray, ref_impl.init_params())
  state = tx.init(params)
  for _ in range(4):
    params, state, _ = step(params, state, batches)
  assert len(reads) == 1
  state = jax.tree.map(jnp.copy, state)  # a state the step has not seen
  params, state, _ = step(params, state, batches)
  assert len(reads) == 2
  assert int(state.count) == 10
  # Under an outer jit the step is traced and chooses on device.
  params, state, _ = jax.jit(step)(params, state, batches)
  assert int(state.count) == 12 and len(reads) == 2


def test_cycle_mode_requires_a_static_cycle():
  tx = optax.chain(optax.identity(), make_tx(1))
  with pytest.raises(ValueError, match="static cycle"):
    _train_step._build_step(
      jax.value_and_grad(jax_loss), tx, 2, has_aux=False, mode="cycle"
    )


def test_traced_n_ref_uses_the_generic_path():
  """`inject_hyperparams` traces n_ref: no static cycle, still correct."""
  n_ref = 1
  batches = ref_impl.make_batches(3 * (n_ref + 1), seed=71)
  rec = numpy_record(batches, n_ref)
  tx = optax.inject_hyperparams(optax_profit.profit, static_args=("main",))(
    main=optax.adamw(0.05, weight_decay=0.3), ref=0.05, n_ref=n_ref
  )
  step = optax_profit.make_train_step(jax_loss, tx, cycle_length=n_ref + 1)
  params = jax.tree.map(jnp.asarray, ref_impl.init_params())
  state = tx.init(params)
  for c in range(3):
    chunk = batches[c * (n_ref + 1) : (c + 1) * (n_ref + 1)]
    params, state, _ = step(params, state, stack(chunk))
  assert_params_close(params, rec.params[-1], "after 3 cycles")


# ------------------------------------------------------------------ memory
def _mlp_loss(params, batch):
  h = jnp.tanh(batch["x"] @ params["w1"])
  return jnp.mean((h @ params["w2"] - batch["y"]) ** 2)


def _compiled_memory(tx, length):
  params = {
    "w1": jnp.zeros((64, 256), jnp.float32),
    "w2": jnp.zeros((256, 8), jnp.float32),
  }
  batches = {
    "x": jnp.zeros((length, 16, 64), jnp.float32),
    "y": jnp.zeros((length, 16, 8), jnp.float32),
  }
  step = optax_profit.make_train_step(_mlp_loss, tx, cycle_length=length)
  state = jax.eval_shape(tx.init, params)
  return step.lower(params, state, batches).compile().memory_analysis()


@pytest.mark.parametrize("n_ref", [1, 3])
def test_compiled_step_memory_is_adamw_plus_one_param_copy(n_ref):
  """The compiled train step needs adamw's memory plus theta_ref, no more.

  Arguments grow by exactly one float32 params copy (theta_ref); the
  temporaries (gradients, activations) stay adamw's own, up to the small
  per-batch value buffers: no updates buffer, no copy of the params (a
  scan of per-call updates with a zero-filled updates buffer needed one
  more params copy of temporaries).
  """
  with jax.enable_x64(False):
    length = n_ref + 1
    param_bytes = (64 * 256 + 256 * 8) * 4
    base = _compiled_memory(optax.adamw(1e-3), length)
    prof = _compiled_memory(
      optax_profit.profit(optax.adamw(1e-3), ref=1e-4, n_ref=n_ref), length
    )
  extra_args = prof.argument_size_in_bytes - base.argument_size_in_bytes
  assert param_bytes <= extra_args <= param_bytes + 64
  extra_temp = prof.temp_size_in_bytes - base.temp_size_in_bytes
  assert extra_temp <= param_bytes // 4, (extra_temp, param_bytes)
  # Outputs alias the donated arguments: nothing new is allocated for them.
  assert prof.output_size_in_bytes - prof.alias_size_in_bytes <= 1024


def test_bfloat16_delta_costs_half_a_params_copy():
  """bf16 delta: arguments + 1/2 params copy, no float32 copy of delta.

  The reductions read the bfloat16 delta and convert it where they read it;
  separate reductions materialized its float32 conversion (+1 params copy).
  """
  with jax.enable_x64(False):
    param_bytes = (64 * 256 + 256 * 8) * 4
    base = _compiled_memory(optax.adamw(1e-3), 2)
    prof = _compiled_memory(
      optax_profit.profit(optax.adamw(1e-3), ref=1e-4, delta_dtype=jnp.bfloat16), 2
    )
  total = lambda m: m.argument_size_in_bytes + m.temp_size_in_bytes
  extra = total(prof) - total(base)
  assert extra <= param_bytes // 2 + param_bytes // 16, (extra, param_bytes)


@functools.cache
def _update_memory(delta_dtype, warmup_steps=0):
  params = {"w": jnp.zeros((512, 512), jnp.float32)}
  tx = optax_profit.profit(
    optax.adamw(1e-3), ref=1e-4, delta_dtype=delta_dtype, warmup_steps=warmup_steps
  )

  def step(params, state, batch):
    grads = jax.grad(lambda p: jnp.mean((batch @ p["w"]) ** 2))(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = jax.eval_shape(tx.init, params)
  batch = jnp.zeros((8, 512), jnp.float32)
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, batch).compile()
  return compiled.memory_analysis()


@pytest.mark.parametrize("warmup_steps", [0, 5])
def test_per_call_update_builds_updates_in_the_gradient_buffer(warmup_steps):
  """Per-call `update` inside a train step: one params-sized temporary.

  The gradient is the only params-sized temporary: the updates are written
  into its buffer (no zero-filled updates buffer, no copy of untouched state).
  The remaining slack holds the activations (8 x 512 floats). With a warm-up
  too: a displacement zeroed by a traced `where` was a second one.
  """
  with jax.enable_x64(False):
    mem = _update_memory(None, warmup_steps)
  param_bytes = 512 * 512 * 4
  assert mem.temp_size_in_bytes <= param_bytes + param_bytes // 16, (
    mem.temp_size_in_bytes
  )
