"""Whole training step per batch on real models.

For each model and ``n_ref`` (cycle length ``L = n_ref + 1``), six
candidates consume the same ``L`` device-resident batches per timed run:

* ``adamw, loop``: a jitted per-batch step (gradient, ``optax.adamw`` update,
  ``apply_updates``; params and state donated), called ``L`` times;
* ``adamw, make_train_step``: ``optax_profit.make_train_step(loss, adamw,
  cycle_length=L)``, one call;
* ``profit, loop``: the per-batch step with ``optax_profit.profit(adamw)``,
  called ``L`` times (the per-call ``update``); ``(unordered)``: the same
  without the reduction-before-write ordering (``_xla_cpu.never``);
* ``profit, make_train_step``: one call (the static-cycle fast path, chosen
  on the host, the state being at a cycle boundary; its compile time is that
  of its first call);
* ``profit, make_train_step (on-device choice)``: the step that
  ``make_train_step`` runs when traced under an outer ``jax.jit``: both
  paths compiled, the choice made on device;
* ``profit, make_train_step (generic)``: the step forced onto the scan of
  per-call updates (``_build_step(mode="generic")``), to show what the fast
  path buys;
* ``profit, make_train_step (main step unlooped)``: the static cycle without
  the one-trip loop that holds its main step on CPU, to show what that loop
  buys (XLA merging the two batches' passes keeps more activations alive).
"""

import contextlib
import functools
import time

import jax
import jax.numpy as jnp
import optax

import optax_profit
from benchmarks import models, timing, update
from optax_profit import _train_step, _xla_cpu


def _per_batch_step(loss_fn, tx):
  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  return step


def _main_step_unlooped():
  """Traces the static cycle with its CPU main-step loop replaced by a call."""
  return update.patched(_xla_cpu, "run_if", lambda pred, fn, operand: fn(operand))


def run(
  workloads: list[models.Workload],
  n_refs: list[int],
  *,
  rounds: int,
  names: frozenset[str] | None = None,
) -> dict:
  """Times, compiles and profiles the train steps.

  Args:
    workloads: models to run.
    n_refs: PROFIT's ``n_ref`` values (one cycle per make_train_step call).
    rounds: timing rounds.
    names: the candidates to run (all when None); the two ``adamw`` rows,
      the baselines of the ratios, always run.

  Returns:
    ``{(workload name, n_ref): {"params": int, "timings": {...},
    "compile_s": {...}, "memory": {...}}}``.
  """
  results = {}
  for work in workloads:
    for n_ref in n_refs:
      length = n_ref + 1
      batch_list = [jax.device_put(work.make_batch(i)) for i in range(length)]
      stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batch_list)
      adamw = optax.adamw(1e-4)
      profit = optax_profit.profit(optax.adamw(1e-4), ref=1e-6, n_ref=n_ref)
      value_and_grad = jax.value_and_grad(work.loss_fn)

      def forced(mode, profit=profit, value_and_grad=value_and_grad, length=length):
        return jax.jit(
          _train_step._build_step(  # pylint: disable=protected-access
            value_and_grad, profit, length, has_aux=False, mode=mode
          ),
          donate_argnums=(0, 1),
          keep_unused=True,
        )

      dispatching = optax_profit.make_train_step(work.loss_fn, profit)
      specs = [
        ("adamw, loop", adamw, _per_batch_step(work.loss_fn, adamw), False),
        (
          "adamw, make_train_step",
          adamw,
          optax_profit.make_train_step(work.loss_fn, adamw, cycle_length=length),
          True,
        ),
        ("profit, loop", profit, _per_batch_step(work.loss_fn, profit), False),
        (
          "profit, loop (unordered)",
          profit,
          _per_batch_step(work.loss_fn, profit),
          False,
        ),
        ("profit, make_train_step", profit, dispatching, True),
        ("profit, make_train_step (on-device choice)", profit, forced("auto"), True),
        ("profit, make_train_step (generic)", profit, forced("generic"), True),
        ("profit, make_train_step (main step unlooped)", profit, forced("cycle"), True),
      ]
      candidates, compile_s, memory = [], {}, {}
      keep = lambda name: names is None or name.startswith("adamw") or name in names
      for name, tx, step, scanned in filter(lambda s: keep(s[0]), specs):
        params = jax.tree.map(jnp.copy, work.params)
        holder = timing.Holder(params, tx.init(params))
        example = stacked if scanned else batch_list[0]
        if step is dispatching:
          # It compiles the static cycle on its first call (the state is at a
          # cycle boundary); its memory is that of the cycle it runs.
          start = time.perf_counter()
          holder.params, holder.state, _ = step(holder.params, holder.state, stacked)
          timing.block(holder.params)
          compile_s[name] = time.perf_counter() - start
          compiled = step._cycle.lower(  # pylint: disable=protected-access
            holder.params, holder.state, stacked
          ).compile()
          memory[name] = timing.memory(compiled)
          compiled = step
        else:
          unlooped = name.endswith("(main step unlooped)")
          with (
            _main_step_unlooped() if unlooped else contextlib.nullcontext(),
            update.unordered(name.endswith("(unordered)")),
          ):
            compiled, seconds = timing.timed_compile(
              step, holder.params, holder.state, example
            )
          compile_s[name] = seconds
          memory[name] = timing.memory(compiled)
        # Run the executable compiled (and timed) above.
        inputs = [stacked] if scanned else batch_list

        def run_once(holder=holder, step=compiled, inputs=inputs):
          for batch in inputs:
            holder.params, holder.state, _ = step(holder.params, holder.state, batch)
          timing.block(holder.params)

        candidates.append(timing.Candidate(name, run_once, units=length))
      timings = timing.interleaved(
        candidates, rounds=rounds, calls_per_round=1, warmup=1
      )
      results[(work.name, n_ref)] = {
        "params": models.param_count(work.params),
        "timings": timings,
        "compile_s": compile_s,
        "memory": memory,
      }
  return results
