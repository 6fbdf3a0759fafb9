"""The optimizer update alone, per batch, at about 1M, 10M and 50M params.

Params are 10 float32 leaves. Every candidate is a ``jax.jit`` function with
params and optimizer state donated, timed per batch:

* ``sgd``, ``adamw``: ``params, state = apply_updates(params, tx.update(g,
  state, params))``, one call per batch;
* ``profit n_ref=k, update()``: the same per-call step with
  ``optax_profit.profit(optax.adamw, n_ref=k)``, timed over whole cycles of
  ``k + 1`` calls (the per-call path, what a hand-written loop uses);
* ``profit n_ref=k, cycle``: ``optax_profit._profit.run_cycle``, the static
  cycle that :func:`optax_profit.make_train_step` runs for aligned states,
  one call per cycle (the make_train_step path);
* ``... delta bf16``: the same with ``delta_dtype=jnp.bfloat16``.

Gradients are materialized jit arguments (fixed, read-only); for the cycle,
the reference batches' gradients are one stacked argument and the main
batch's another. The per-call ``update`` builds its updates in the gradient's
buffer; given a read-only argument, XLA first copies it into a temporary
(two passes, and on CPU a fresh allocation, page-faulted on every call once
it exceeds glibc's 32 MB mmap threshold). Inside a train step the gradient is
already a temporary: see the train-step benchmark's ``loop`` rows for the
per-call path in that setting.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

import optax_profit
from benchmarks import timing
from optax_profit import _profit

NUM_LEAVES = 10


def make_params(total: int) -> dict[str, jax.Array]:
  """``NUM_LEAVES`` float32 leaves of ``total // NUM_LEAVES`` params each."""
  size = total // NUM_LEAVES
  key = jax.random.PRNGKey(0)
  return {
      f"w{i}": jax.random.normal(jax.random.fold_in(key, i), (size,))
      for i in range(NUM_LEAVES)
  }


def per_call_step(tx: optax.GradientTransformation):
  """One jitted per-batch update with params and state donated.

  Args:
    tx: the optimizer.

  Returns:
    ``step(params, state, grads) -> (params, state)``.
  """

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


def cycle_step(tx: optax.GradientTransformation, n_ref: int):
  """One jitted static PROFIT cycle fed with precomputed gradients.

  ``run_cycle`` asks ``value_and_grad`` for the reference batches first (one
  trace, inside its scan) and for the main batch last: the stub returns the
  stacked reference gradients sliced at the batch index, then the main
  gradients.

  Args:
    tx: a `profit` transformation with this ``n_ref``.
    n_ref: reference steps per cycle.

  Returns:
    ``step(params, state, ref_grads, main_grads) -> (params, state)``.
  """

  def step(params, state, ref_grads, main_grads):
    calls = []

    def value_and_grad(_, index):
      calls.append(index)
      if len(calls) == 1:  # the reference steps
        return jnp.zeros(()), jax.tree.map(lambda g: g[index], ref_grads)
      return jnp.zeros(()), main_grads

    params, state, _ = _profit.run_cycle(
        tx, value_and_grad, params, state, jnp.arange(n_ref + 1)
    )
    return params, state

  return jax.jit(step, donate_argnums=(0, 1), keep_unused=True)



def _tree_bytes(tree: Any) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))



def _add(candidates, memory, state_bytes, params, name, step, tx, args, units, calls):
  """Compiles one candidate, records its memory and appends its timer."""
  holder = timing.Holder(
      jax.tree.map(jnp.copy, params), tx.init(jax.tree.map(jnp.copy, params))
  )
  compiled, _ = timing.timed_compile(step, holder.params, holder.state, *args)
  memory[name] = {**timing.memory(compiled), "gradients": _tree_bytes(args)}
  state_bytes[name] = _tree_bytes(holder.state)

  def run_once():
    for _ in range(calls):
      holder.params, holder.state = compiled(holder.params, holder.state, *args)
    timing.block((holder.params, holder.state))

  candidates.append(timing.Candidate(name, run_once, units=units))


def run(sizes: list[int], *, rounds: int, with_delta: bool = True) -> dict:
  """Times and profiles the update alone at each size.

  Args:
    sizes: total params per model.
    rounds: timing rounds.
    with_delta: also time ``delta_dtype=jnp.bfloat16`` (n_ref=1).

  Returns:
    ``{size: {"timings": {name: Timing}, "memory": {name: {...}},
    "state_bytes": {name: int}, "param_bytes": int}}``; memory entries hold
    the compiled sizes and the bytes of the gradient arguments.
  """
  results = {}
  for total in sizes:
    params = make_params(total)
    grads = jax.tree.map(lambda p: 1e-3 * p, params)
    main_grads = jax.tree.map(lambda p: 2e-3 * p, params)
    candidates, memory, state_bytes = [], {}, {}
    add = functools.partial(_add, candidates, memory, state_bytes, params)
    for name, tx in (("sgd", optax.sgd(1e-3)), ("adamw", optax.adamw(1e-3))):
      add(name, per_call_step(tx), tx, (grads,), 1, 1)
    for n_ref in (1, 3):
      tx = optax_profit.profit(optax.adamw(1e-3), ref=1e-4, n_ref=n_ref)
      add(f"profit n_ref={n_ref}, update()", per_call_step(tx), tx, (grads,),
          n_ref + 1, n_ref + 1)
      ref_grads = jax.tree.map(lambda g, k=n_ref: jnp.stack([g] * k), grads)
      add(f"profit n_ref={n_ref}, cycle", cycle_step(tx, n_ref), tx,
          (ref_grads, main_grads), n_ref + 1, 1)
      del ref_grads
    if with_delta:
      tx = optax_profit.profit(
          optax.adamw(1e-3), ref=1e-4, n_ref=1, delta_dtype=jnp.bfloat16
      )
      add("profit n_ref=1, update(), delta bf16", per_call_step(tx), tx,
          (grads,), 2, 2)
      add("profit n_ref=1, cycle, delta bf16", cycle_step(tx, 1), tx,
          (jax.tree.map(lambda g: g[None], grads), main_grads), 2, 1)
    timings = timing.interleaved(candidates, rounds=rounds, calls_per_round=3)
    results[total] = {
        "timings": timings,
        "memory": memory,
        "state_bytes": state_bytes,
        "param_bytes": _tree_bytes(params),
    }
    del candidates
  return results
