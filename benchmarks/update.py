"""The optimizer update, per batch, with the gradient made inside the step.

Params are 10 float32 leaves (about 1M, 10M or 50M in all). Every candidate is
a ``jax.jit`` step with params and optimizer state donated, and the gradient
is produced inside the jitted step, as in training, by the cheapest possible
"model" so that the optimizer's own cost dominates:

* **per-call** rows: ``g = params * t`` (``t`` a scalar argument), then
  ``apply_updates(params, tx.update(g, state, params))``, one call per batch
  (what ``optax.chain``, Flax ``TrainState`` and ``nnx.Optimizer`` run). PROFIT
  rows are timed over whole cycles of ``n_ref + 1`` calls. The per-call
  drivers are compared: ``default`` (what ``profit`` picks for this platform),
  ``select`` (both steps computed, ``jnp.where``; the GPU/TPU choice),
  ``in-place`` (zero-or-one-trip ``while`` loops; the CPU choice) and
  ``lax.cond`` (the phase picked by one ``lax.cond``);
* **make_train_step** rows: the linear loss ``sum(params * batch)``, whose
  gradient is the batch, through ``optax_profit.make_train_step`` (the static
  cycle for ``profit``), one call per cycle of stacked batches, against
  ``make_train_step`` of ``optax.adamw`` over the same batches.

Per batch, ratio to ``adamw`` through the same path. Memory: optimizer-state
bytes from the pytree, and ``jit(...).lower(...).compile().memory_analysis()``
(params and state arguments, temporaries, unaliased outputs; the stacked
batches are left out).
"""

import contextlib
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

import optax_profit
from benchmarks import timing
from optax_profit import _profit, _projection, _xla_cpu

NUM_LEAVES = 10


def make_params(total: int) -> dict[str, jax.Array]:
  """``NUM_LEAVES`` float32 leaves of ``total // NUM_LEAVES`` params each."""
  size = total // NUM_LEAVES
  key = jax.random.PRNGKey(0)
  return {
    f"w{i}": jax.random.normal(jax.random.fold_in(key, i), (size,))
    for i in range(NUM_LEAVES)
  }


def cond_update(steps, grads, state, params):
  """The per-call update with its phase picked by one ``lax.cond``."""
  del params  # bound in `steps`
  stored = getattr(state, steps.field)

  def reference(_):
    updates, ref_state = steps.reference(grads, state.ref_state)
    stored_, updates = steps.record(stored, updates)
    return updates, state._replace(ref_state=ref_state, **{steps.field: stored_})

  def main(_):
    updates, main_state, diagnostics = steps.main(grads, stored, state.main_state)
    return updates, state._replace(main_state=main_state, diagnostics=diagnostics)

  updates, state = jax.lax.cond(steps.phase.is_ref, reference, main, None)
  return updates, state._replace(count=state.count + 1)


VARIANTS = {**_profit.DRIVERS, "lax.cond": cond_update}


def with_variant(tx: optax_profit.ProfitTransformation, variant: str):
  """``tx`` with its per-call driver forced to ``variant``."""
  return _profit.with_driver(tx, VARIANTS[variant])


@contextlib.contextmanager
def patched(module: Any, name: str, value: Any, active: bool = True):
  """Traces with ``module.name`` replaced by ``value`` (when ``active``)."""
  saved = getattr(module, name)
  if active:
    setattr(module, name, value)
  try:
    yield
  finally:
    setattr(module, name, saved)


def unordered(active: bool = True):
  """Traces with ``_xla_cpu.never`` constant: no reduction-before-write
  order, to show what that device buys (an XLA:CPU buffer copy)."""
  return patched(_xla_cpu, "never", lambda value: jnp.zeros((), bool), active)


def plain_sums(active: bool = True):
  """Traces the projection's sums as on GPU/TPU (maxima, then plain sums of
  the rescaled terms), to show what XLA:CPU's one-pass variadic reduction
  buys."""
  return patched(_xla_cpu, "projection_sums", _projection._default_sums, active)  # pylint: disable=protected-access


def per_call_step(tx: optax.GradientTransformation):
  """``step(params, state, t)``: ``g = params * t``, update, apply."""

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state, t):
    grads = jax.tree.map(lambda p: p * t, params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


def linear_loss(params, batch):
  return sum(
    jnp.sum(p * b)
    for p, b in zip(jax.tree.leaves(params), jax.tree.leaves(batch), strict=True)
  )


def _tree_bytes(tree: Any) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


UNORDERED = "profit n_ref=1, unordered"
PLAIN_SUMS = "profit n_ref=1, plain sums"


def traced_as(name: str):
  """The context a candidate is traced in: a device in the code switched off."""
  if name == UNORDERED:
    return unordered()
  if name == PLAIN_SUMS:
    return plain_sums()
  return contextlib.nullcontext()


def _profit_candidates(n_refs):
  """``(name, tx, n_ref)`` of the PROFIT candidates."""
  adamw = optax.adamw(1e-3)
  out = []
  for n_ref in n_refs:
    tx = optax_profit.profit(adamw, ref=1e-4, n_ref=n_ref)
    out.append((f"profit n_ref={n_ref}", tx, n_ref))
    if n_ref == 1:
      out += [(f"profit n_ref=1, {v}", with_variant(tx, v), 1) for v in VARIANTS]
      out.append((UNORDERED, tx, 1))
      out.append((PLAIN_SUMS, tx, 1))
      out.append(
        (
          "profit n_ref=1, copy",
          optax_profit.profit(adamw, ref=1e-4, storage="copy"),
          1,
        )
      )
      out.append(
        (
          "profit n_ref=1, delta bf16",
          optax_profit.profit(adamw, ref=1e-4, delta_dtype=jnp.bfloat16),
          1,
        )
      )
  return out


def run(
  sizes: list[int],
  *,
  rounds: int,
  n_refs=(1, 3),
  names: frozenset[str] | None = None,
  calls_per_round: int = 3,
) -> dict:
  """Times and profiles both paths at each size.

  Args:
    sizes: total params of each size.
    rounds: timing rounds.
    n_refs: ``n_ref`` values of the PROFIT candidates.
    names: the candidates to run (all when None; ``sgd`` and ``adamw`` are
      always run, ``adamw`` being the baseline of every ratio).
    calls_per_round: calls per candidate per round.

  Returns:
    ``{size: {path: {"timings": {name: Timing}, "memory": {name: {...}},
    "state_bytes": {name: int}}, "param_bytes": int}}`` with path
    ``"per-call"`` or ``"make_train_step"``.
  """
  results = {}
  for total in sizes:
    params = make_params(total)
    t = jnp.float32(1e-3)
    out = {"param_bytes": _tree_bytes(params)}
    for path in ("per-call", "make_train_step"):
      candidates, memory, state_bytes = [], {}, {}
      entries = [("sgd", optax.sgd(1e-3), 0), ("adamw", optax.adamw(1e-3), 0)]
      entries += [
        e for e in _profit_candidates(n_refs) if names is None or e[0] in names
      ]
      for name, tx, n_ref in entries:
        if path == "make_train_step" and name.endswith(tuple(VARIANTS)):
          continue  # the static cycle has no per-call driver
        holder = timing.Holder(
          jax.tree.map(jnp.copy, params), tx.init(jax.tree.map(jnp.copy, params))
        )
        state_bytes[name] = _tree_bytes(holder.state)
        if path == "per-call":
          calls, units = max(n_ref + 1, 1), max(n_ref + 1, 1)
          with traced_as(name):
            compiled, _ = timing.timed_compile(
              per_call_step(tx), holder.params, holder.state, t
            )
          args = (t,)
          extra = 0
        else:
          units = (n_ref + 1) if n_ref else 2
          calls = 1
          batches = jax.tree.map(
            lambda p, u=units: jnp.stack([p * (1e-3 * (i + 1)) for i in range(u)]),
            params,
          )
          step = optax_profit.make_train_step(
            linear_loss, tx, cycle_length=None if n_ref else units
          )
          # The dispatching step runs the static cycle from a fresh state.
          with traced_as(name):
            compiled = (
              getattr(step, "_cycle", step)
              .lower(holder.params, holder.state, batches)
              .compile()
            )
          args = (batches,)
          extra = _tree_bytes(batches)
        memory[name] = {**timing.memory(compiled), "inputs": extra}

        def run_once(holder=holder, compiled=compiled, args=args, calls=calls):
          for _ in range(calls):
            holder.params, holder.state = compiled(holder.params, holder.state, *args)[
              :2
            ]
          timing.block((holder.params, holder.state))

        candidates.append(timing.Candidate(name, run_once, units=units))
      timings = timing.interleaved(
        candidates, rounds=rounds, calls_per_round=calls_per_round
      )
      out[path] = {"timings": timings, "memory": memory, "state_bytes": state_bytes}
      del candidates
    results[total] = out
  return results
