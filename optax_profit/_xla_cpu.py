"""XLA:CPU devices: in-place updates and one-pass reductions.

Nothing here changes what PROFIT computes, only how XLA:CPU runs it. On CPU:

* a ``lax.cond`` gives its results their own buffers, while a ``while`` loop
  updates its carry in place and its predicate costs no device sync:
  :func:`run_if` runs a step zero times or once, and :func:`in_place_update`
  is the per-call driver built on it;
* an updated buffer is written in place only when the data flow orders every
  reader of its old contents before the write: :func:`never`;
* separate reductions are separate passes over the data:
  :func:`projection_sums` takes ``<d, g>``, ``||g||^2`` and ``||d||^2`` in
  one variadic reduction per leaf.

On GPU and TPU the library takes the control-flow-free paths instead (a loop
would wait for its predicate on the host).
"""

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax

T = TypeVar("T")


def run_if(pred: jax.typing.ArrayLike, fn: Callable[[T], T], operand: T) -> T:
  """Returns ``fn(operand)`` if ``pred`` else ``operand``, updating in place.

  ``lax.cond`` gives its results their own buffers, so a branch passing a
  large pytree through (AdamW's moments in a reference step) pays a full
  copy per call; a ``while_loop`` that runs zero times or once updates its
  carry in place. Used on XLA:CPU only: it has no reverse-mode derivative,
  and on GPU each loop waits for its predicate on the host.

  Args:
    pred: a boolean scalar (may be traced).
    fn: maps ``operand`` to a pytree of the same structure, shapes and dtypes.
    operand: the pytree to update.

  Returns:
    ``fn(operand)`` when ``pred`` is true, ``operand`` otherwise.
  """
  body = lambda carry: (jnp.zeros((), bool), fn(carry[1]))
  pred = jnp.asarray(pred, dtype=bool)
  return jax.lax.while_loop(lambda carry: carry[0], body, (pred, operand))[1]


def never(value: jax.Array) -> jax.Array:
  """A false boolean scalar that XLA cannot prove false, computed from ``value``.

  XLA:CPU writes an updated buffer in place only when the data flow orders
  every reader of the old contents (a reduction such as a norm or the loss)
  before the write; otherwise it first copies the buffer into a params-sized
  temporary. Selecting with ``never(reduction)`` creates that order for
  free: no float equals both infinities.
  """
  return (value == jnp.inf) & (value == -jnp.inf)


# ------------------------------------------------------------ one-pass sums
def _add3(a: tuple, b: tuple) -> tuple:  # module level: jax caches it by identity
  return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def sum_in_one_pass(terms: tuple) -> tuple:
  """The sums of three same-shaped arrays as one variadic reduction.

  XLA:CPU runs separate reductions as separate passes over their operands
  (and materializes operands they share). On a mesh the partial sums are
  combined by all-gathers of one value per device.
  """
  dtype = terms[0].dtype
  zeros = (jnp.zeros((), dtype),) * 3
  return jax.lax.reduce(terms, zeros, _add3, tuple(range(terms[0].ndim)))


def _sums_and_maxima(a: tuple, b: tuple) -> tuple:  # module level: cached
  return (*_add3(a[:3], b[:3]), jnp.maximum(a[3], b[3]), jnp.maximum(a[4], b[4]))


def maxima_in_one_pass(updates: optax.Updates, delta: optax.Updates, dtype) -> tuple:
  """``max |d|`` and ``max |g|`` over all leaves, for the rescaled pass.

  Per leaf one variadic reduction with the unscaled sums (discarded),
  converting where it reads: a max reduction of its own reads a bfloat16
  ``d`` through a materialized float32 copy (+1 params copy), and a variadic
  reduction of the maxima alone moves per-device arrays on a mesh.
  """
  md = mg = jnp.zeros((), dtype)
  for g, d in zip(jax.tree.leaves(updates), jax.tree.leaves(delta), strict=True):
    g, d = g.astype(dtype), d.astype(dtype)
    terms = (d * g, g * g, d * d, jnp.abs(d), jnp.abs(g))
    zeros = (jnp.zeros((), dtype),) * 5
    out = jax.lax.reduce(terms, zeros, _sums_and_maxima, tuple(range(d.ndim)))
    md, mg = jnp.maximum(md, out[3]), jnp.maximum(mg, out[4])
  return md, mg


def projection_sums(
  updates: optax.Updates,
  delta: optax.Updates,
  dtype: jnp.dtype,
  n: int,
  rescaled: Callable[..., tuple],
) -> tuple:
  """``<d, g>, ||g||^2, ||d||^2, ed, eg`` for the projection, on XLA:CPU.

  One pass of unscaled sums; a second, rescaled one only where they may have
  lost terms to under- or overflow.

  Args:
    updates: the gradient ``g``.
    delta: the displacement ``d``, same structure.
    dtype: the accumulation dtype.
    n: the number of entries of ``d`` (at least 1).
    rescaled: ``rescaled(updates, delta, dtype, sum_terms, maxima)``, the
      sums of the operands scaled by powers of two and those powers'
      exponents ``ed, eg`` (``_projection._rescaled_sums``), called with
      :func:`sum_in_one_pass` and :func:`maxima_in_one_pass`.

  Returns:
    ``(dg, gg, dd, ed, eg)``: the sums of ``d * 2**-ed`` and ``g * 2**-eg``
    (``ed = eg = 0`` when the unscaled sums are exact).
  """
  per_leaf = []
  for g, d in zip(jax.tree.leaves(updates), jax.tree.leaves(delta), strict=True):
    g, d = g.astype(dtype), d.astype(dtype)
    per_leaf.append(sum_in_one_pass((d * g, g * g, d * d)))
  dg, gg, dd = (sum(c, jnp.zeros((), dtype)) for c in zip(*per_leaf, strict=True))
  # A product or square below the smallest normal is lost: n of them at most,
  # under 2**-(nmant + 3) of ||d|| * ||g|| once both squared norms reach
  # `least`. An overflow leaves a sum infinite. (Maxima in the same pass
  # would tell the same, but XLA:CPU does not vectorize a reduction that
  # mixes max and add: twice the time of the sums.)
  fi = jnp.finfo(dtype)
  least = n * 2.0 ** (fi.minexp + fi.nmant + 3)
  exact = jnp.isfinite(dg) & jnp.isfinite(gg + dd) & (jnp.minimum(gg, dd) >= least)
  zero = jnp.zeros((), jnp.int32)
  body = lambda carry: (
    jnp.zeros((), bool),
    rescaled(updates, delta, dtype, sum_in_one_pass, maxima_in_one_pass),
  )
  # Rescaled in a zero-or-one-trip loop: the second and third passes over g
  # and d run only where they are needed (also where g or d is all zero:
  # then the rescaled sums are zero too).
  return jax.lax.while_loop(
    lambda carry: carry[0], body, (~exact, (dg, gg, dd, zero, zero))
  )[1]


# ------------------------------------------------------- per-call driver
def in_place_update(
  steps: Any, grads: optax.Updates, state: Any, params: optax.Params
) -> tuple[optax.Updates, Any]:
  """The per-call ``update`` on XLA:CPU: only the phase's step runs.

  The steps run inside zero-or-one-trip loops (:func:`run_if`), which update
  the state in place, and the updates are written into the gradient's buffer
  when the layouts agree.

  Args:
    steps: Algorithm 1 bound to this call (``_profit.Steps``).
    grads: the gradient.
    state: the :class:`optax_profit.ProfitState`.
    params: the current weights.

  Returns:
    ``(updates, state)``, as ``profit``'s ``update``.
  """
  phase = steps.phase
  same_layout = jax.tree.map(lambda g, p: (g.shape, g.dtype), grads, params) == (
    jax.tree.map(lambda p: (p.shape, p.dtype), params)
  )
  slot = grads if same_layout else jax.tree.map(jnp.zeros_like, params)
  read = (lambda carried: carried) if same_layout else (lambda carried: grads)
  stored = getattr(state, steps.field)

  def reference(carry):
    carried, ref_state = carry
    return steps.reference(read(carried), ref_state)

  def record(carry):  # reads the updates from the buffer the first loop wrote
    ref_updates, stored = carry
    stored, ref_updates = steps.record(stored, ref_updates)
    return optax.tree.cast_like(ref_updates, carry[0]), stored

  def reference_and_record(carry):
    carried, ref_state, stored = carry
    ref_updates, ref_state = reference((carried, ref_state))
    stored, ref_updates = steps.record(stored, ref_updates)
    return ref_updates, ref_state, stored

  if all(jnp.dtype(p.dtype).itemsize >= 4 for p in jax.tree.leaves(params)):
    # The reference updates are in the params' dtypes: two loops, the
    # second reading the updates from the buffer the first one wrote.
    slot, ref_state = run_if(phase.is_ref, reference, (slot, state.ref_state))
    slot, stored = run_if(phase.is_ref, record, (slot, stored))
  else:  # narrower params: the updates are wider than the slot
    slot, ref_state, stored = run_if(
      phase.is_ref, reference_and_record, (slot, state.ref_state, stored)
    )

  def main(carry):
    carried, main_state, _ = carry
    return steps.main(read(carried), stored, main_state)

  slot, main_state, diagnostics = run_if(
    ~phase.is_ref, main, (slot, state.main_state, state.diagnostics)
  )
  state = state._replace(
    count=state.count + 1,
    ref_state=ref_state,
    main_state=main_state,
    **{steps.field: stored},
    diagnostics=diagnostics,
  )
  return slot, state
