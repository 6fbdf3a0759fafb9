"""A jit-compiled train step that runs one whole PROFIT cycle per call."""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_profit import _profit, _types, _validation, _xla_cpu
from optax_profit._projection import Diagnostics

Batch = Any
Metrics = dict[str, Any]
TrainStep = Callable[..., tuple[optax.Params, optax.OptState, Metrics]]


def check_stacked_batches(batches: Batch, cycle_length: int) -> None:
  """Raises ``ValueError`` unless every leaf of ``batches`` is stacked.

  Args:
    batches: a pytree of arrays whose leading axis indexes the batches.
    cycle_length: the expected leading size.

  Raises:
    ValueError: if there are no leaves, or a leaf is a scalar or has another
      leading size (the message lists every leaf's).

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_profit import check_stacked_batches
    >>> check_stacked_batches({"x": jnp.zeros((2, 8, 3))}, cycle_length=2)
    >>> check_stacked_batches({"x": jnp.zeros((3, 8, 3))}, cycle_length=2)
    Traceback (most recent call last):
    ...
    ValueError: one call consumes one PROFIT cycle of 2 batches (n_ref + 1): ...
  """
  leaves = jax.tree_util.tree_leaves_with_path(batches)
  if not leaves:
    raise ValueError("`batches` has no array leaves.")
  sizes = {jax.tree_util.keystr(k) or "<root>": jnp.shape(x)[:1] for k, x in leaves}
  if any(size != (cycle_length,) for size in sizes.values()):
    listing = ", ".join(f"{k}: {s[0] if s else 'scalar'}" for k, s in sizes.items())
    raise ValueError(
      f"one call consumes one PROFIT cycle of {cycle_length} batches (n_ref + 1): "
      f"every leaf of `batches` needs a leading axis of size {cycle_length}, but "
      f"their leading sizes are {listing}."
    )


def _check_array_params(params: optax.Params) -> None:
  """Raises ``TypeError`` naming the params leaves that are not arrays."""
  bad = [
    f"{jax.tree_util.keystr(k) or '<root>'} ({type(x).__name__})"
    for k, x in jax.tree_util.tree_leaves_with_path(params)
    if not isinstance(x, (jax.Array, np.ndarray, np.generic, float, int))
  ]
  if bad:
    raise TypeError(
      "make_train_step's `params` must hold arrays only, but these leaves are "
      f"not: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. With an "
      "Equinox model, split it with `params, static = eqx.partition(model, "
      "eqx.is_array)` and rebuild it in loss_fn with `eqx.combine(params, "
      "static)` (see the Equinox recipe)."
    )


def profit_diagnostics(opt_state: optax.OptState) -> Metrics:
  """What the last main step did, read from any state holding a ProfitState.

  Args:
    opt_state: any optimizer state containing :class:`ProfitState` (directly
      or nested in chains, ``MultiSteps``, ``multi_transform``...), also
      ``nnx.Optimizer(...).opt_state``.

  Returns:
    A dict with keys ``omega``, ``delta_norm``, ``cosine``,
    ``removed_fraction`` and ``projected``: scalars when the state holds one
    :class:`ProfitState`, stacked along a leading axis (in pytree order) when
    it holds several, and an empty dict when none.

  Example:
    >>> import jax.numpy as jnp, optax, optax_profit
    >>> tx = optax.chain(
    ...     optax.clip(1.0), optax_profit.profit(optax.sgd(0.1), ref=0.1)
    ... )
    >>> params = {"w": jnp.array([1.0, 2.0])}
    >>> state = tx.init(params)
    >>> for g in ([1.0, 0.0], [1.0, 1.0]):  # a reference step, then the main step
    ...   updates, state = tx.update({"w": jnp.array(g)}, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> diag = optax_profit.profit_diagnostics(state)
    >>> bool(diag["projected"]), round(float(diag["removed_fraction"]), 4)
    (True, 0.7071)
  """
  is_state = lambda x: isinstance(x, _types.ProfitState)
  states = [s for s in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(s)]
  if not states:
    return {}
  # `nnx.Optimizer` wraps each state leaf in a variable (`get_value()`).
  read = lambda x: x.get_value() if callable(getattr(x, "get_value", None)) else x
  pick = (lambda xs: xs[0]) if len(states) == 1 else jnp.stack
  fields = Diagnostics._fields
  return {k: pick([read(getattr(s.diagnostics, k)) for s in states]) for k in fields}


def _after(value: Any, old: optax.Params, new: optax.Params) -> optax.Params:
  """``new``, ordered after the loss ``value`` (see ``_xla_cpu.never``)."""
  never = _xla_cpu.never(jax.tree.leaves(value)[0])
  return jax.tree.map(lambda o, n: jnp.where(never, o, n), old, new)


def _static_cycle(
  spec: _types.ProfitSpec,
  value_and_grad: Callable[..., Any],
  params: optax.Params,
  state: _types.ProfitState,
  batches: Batch,
  extra_args: dict[str, Any],
) -> tuple[optax.Params, _types.ProfitState, Any]:
  """One cycle from a state at its start, the phase of every batch known.

  Equals ``n_ref + 1`` calls of ``update`` (each followed by
  ``optax.apply_updates``) when ``state`` is at a cycle boundary past the
  warm-up; the caller checks that. No phase selection and no snapshot copy.
  """
  n_ref = spec.n_ref
  # Batches are read at an index, never sliced into a new stacked array.
  batch = lambda i: jax.tree.map(
    lambda x: jax.lax.dynamic_index_in_dim(x, i, 0, False), batches
  )

  def reference(carry, batch, *, first):
    params, stored, ref_state = carry
    value, grads = value_and_grad(params, batch)
    updates, ref_state = _profit.reference_step(
      spec, grads, params, ref_state, extra_args
    )
    stored, updates = spec.storage.record(stored, params, updates, first)
    moved = _after(value, params, optax.apply_updates(params, updates))
    return (moved, stored, ref_state), value

  carry = (params, getattr(state, spec.storage.field), state.ref_state)
  carry, value = reference(carry, batch(0), first=True)
  values = [jax.tree.map(lambda v: jnp.asarray(v)[None], value)]
  if n_ref > 1:
    body = lambda carry, i: reference(carry, batch(i), first=False)
    carry, more = jax.lax.scan(body, carry, jnp.arange(1, n_ref))
    values.append(more)
  moved, stored, ref_state = carry

  copy = spec.storage.kind == "copy"

  def main(carry):
    slot, main_state, _, _, index = carry
    # The body reads the weights from its carry and the batch at a carried
    # index: a loop-invariant operand (or a slice XLA hoists out of the loop)
    # would be materialized in a params- or batch-sized temporary.
    weights, kept = (moved, slot) if copy else (slot, stored)
    value, grads = value_and_grad(weights, batch(index))
    updates, main_state, proj = _profit.main_step(
      spec, grads, weights, kept, main_state, extra_args
    )
    value = jax.tree.map(lambda v, s: jnp.asarray(v, s.dtype), value, value_shape)
    return (
      _after(value, weights, optax.apply_updates(weights, updates)),
      main_state,
      _profit.diagnostics_like(proj, state),
      value,
      index,
    )

  value_shape = jax.eval_shape(value_and_grad, moved, batch(n_ref))[0]
  # With copy storage theta_ref is scratch between cycles: the moved weights
  # stay in its donated buffer and the new weights overwrite the snapshot.
  slot, stored_out = (params, moved) if copy else (moved, stored)
  carry = (
    slot,
    state.main_state,
    state.diagnostics,
    jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), value_shape),
    jnp.int32(n_ref),
  )
  # On XLA:CPU the main step runs in its own (always taken) loop body, so
  # that XLA cannot merge parameter-free parts of its forward pass into the
  # reference steps' and keep both batches' activations alive; on GPU a loop
  # would cost a device-to-host sync of its predicate.
  new_params, main_state, diagnostics, value, _ = jax.lax.platform_dependent(
    carry,
    cpu=lambda c: _xla_cpu.run_if(jnp.bool_(True), main, c),
    default=main,
  )
  values.append(jax.tree.map(lambda v: jnp.asarray(v)[None], value))
  new_state = state._replace(
    count=state.count + spec.cycle_length,
    ref_state=ref_state,
    main_state=main_state,
    **{spec.storage.field: stored_out},
  )
  new_state = new_state._replace(diagnostics=diagnostics)
  values = jax.tree.map(lambda *vs: jnp.concatenate(vs), *values)
  return new_params, new_state, values


def _rotated_cycle(
  spec: _types.ProfitSpec,
  value_and_grad: Callable[..., Any],
  params: optax.Params,
  state: _types.ProfitState,
  batches: Batch,
  extra_args: dict[str, Any],
  offset: int,
) -> tuple[optax.Params, _types.ProfitState, Any]:
  """One cycle's worth of batches from position ``offset`` (``1..n_ref``).

  The call finishes the current cycle (its remaining reference steps, then
  its main step) and starts the next one (its first ``offset`` reference
  steps), the phase of every batch known. Calls that start mid-cycle (after
  a warm-up that is not a multiple of ``n_ref + 1``, or after per-batch
  ``update`` calls) take it: every later call covers one whole cycle too.
  """
  n_ref = spec.n_ref
  batch = lambda i: jax.tree.map(
    lambda x: jax.lax.dynamic_index_in_dim(x, i, 0, False), batches
  )
  stack = lambda v: jax.tree.map(lambda x: jnp.asarray(x)[None], v)

  def reference(carry, i, first):
    params, stored, ref_state = carry
    value, grads = value_and_grad(params, batch(i))
    updates, ref_state = _profit.reference_step(
      spec, grads, params, ref_state, extra_args
    )
    stored, updates = spec.storage.record(stored, params, updates, first)
    moved = _after(value, params, optax.apply_updates(params, updates))
    return (moved, stored, ref_state), value

  def non_first(carry, start, stop):  # reference steps on batches start..stop-1
    if stop <= start:
      return carry, []
    body = lambda c, i: reference(c, i, False)
    carry, values = jax.lax.scan(body, carry, jnp.arange(start, stop))
    return carry, [values]

  main_at = n_ref - offset  # the batch of the main step
  carry = (params, getattr(state, spec.storage.field), state.ref_state)
  carry, values = non_first(carry, 0, main_at)
  weights, stored, ref_state = carry
  value, grads = value_and_grad(weights, batch(main_at))
  updates, main_state, proj = _profit.main_step(
    spec, grads, weights, stored, state.main_state, extra_args
  )
  weights = _after(value, weights, optax.apply_updates(weights, updates))
  values.append(stack(value))
  carry, value = reference((weights, stored, ref_state), main_at + 1, True)
  values.append(stack(value))
  carry, more = non_first(carry, main_at + 2, spec.cycle_length)
  values += more
  new_params, stored, ref_state = carry
  new_state = state._replace(
    count=state.count + spec.cycle_length,
    ref_state=ref_state,
    main_state=main_state,
    **{spec.storage.field: stored},
  )
  new_state = new_state._replace(diagnostics=_profit.diagnostics_like(proj, state))
  values = jax.tree.map(lambda *vs: jnp.concatenate(vs), *values)
  return new_params, new_state, values


def _cycle_length(tx: optax.GradientTransformation, cycle_length: Any) -> int:
  """Batches per call: ``n_ref + 1`` of a bare `profit`, else required."""
  spec = _types.profit_spec(tx)
  if spec is not None and not spec.is_static:
    spec = None  # traced n_ref: no static cycle
  if cycle_length is None:
    if spec is None:
      raise TypeError(
        "`cycle_length` (batches per call) is required when `tx` is not the "
        "transformation returned by optax_profit.profit (e.g. a chain "
        "containing it): pass cycle_length=n_ref + 1 (times k under "
        "optax.MultiSteps(..., k))."
      )
    return spec.cycle_length
  cycle_length = _validation.as_int("cycle_length", cycle_length, 1)
  if spec is not None and cycle_length != spec.cycle_length:
    raise ValueError(
      f"`cycle_length={cycle_length}` contradicts the profit transformation's "
      f"cycle of n_ref + 1 = {spec.cycle_length} batches: leave it out, or "
      "call the step once per cycle."
    )
  return cycle_length


def _is_aligned(spec: _types.ProfitSpec, count: Any) -> Any:
  """Whether call number ``count`` starts a cycle (past the warm-up)."""
  steps = count - spec.warmup_steps
  return (steps >= 0) & (steps % spec.cycle_length == 0)


def _build_step(
  value_and_grad: Callable[..., Any],
  tx: optax.GradientTransformation,
  length: int,
  *,
  has_aux: bool,
  mode: str = "auto",
  offset: int = 0,
) -> TrainStep:
  """The unjitted step of :func:`make_train_step`, by ``mode``.

  ``"generic"``: a ``lax.scan`` of per-batch ``tx.update`` calls, right from
  any state; ``"cycle"``: the static cycle (the caller guarantees a state at
  position ``offset`` of a cycle past the warm-up: 0 is its start); ``"auto"``: on CPU both, chosen on device
  in place; elsewhere the generic scan, which has no control flow.
  """
  spec = _types.profit_spec(tx)
  has_cycle = spec is not None and spec.is_static and spec.cycle_length == length
  if mode not in ("auto", "generic", "cycle"):
    raise ValueError(f"unknown mode {mode!r}")
  if mode == "cycle" and not has_cycle:
    raise ValueError("`tx` has no static cycle of `length` batches.")

  def step(params, opt_state, batches, **extra_args):
    check_stacked_batches(batches, length)

    def generic(params, opt_state):
      def body(carry, batch):
        params, opt_state = carry
        value, grads = value_and_grad(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params, **extra_args)
        params = _after(value, params, optax.apply_updates(params, updates))
        return (params, opt_state), value

      (params, opt_state), values = jax.lax.scan(body, (params, opt_state), batches)
      return params, opt_state, values

    def cycle(params, opt_state):
      _validation.check_state(spec, opt_state, params)
      if offset:
        return _rotated_cycle(
          spec, value_and_grad, params, opt_state, batches, extra_args, offset
        )
      return _static_cycle(spec, value_and_grad, params, opt_state, batches, extra_args)

    def choose_in_place(params, opt_state):
      # Exactly one path runs, each updating (params, state, values) in place.
      aligned = _is_aligned(spec, opt_state.count)
      values = jax.eval_shape(cycle, params, opt_state)[2]
      carry = (params, opt_state, jax.tree.map(jnp.zeros_like, values))
      carry = _xla_cpu.run_if(aligned, lambda c: cycle(c[0], c[1]), carry)
      return _xla_cpu.run_if(~aligned, lambda c: generic(c[0], c[1]), carry)

    if mode == "cycle":
      params, opt_state, values = cycle(params, opt_state)
    elif mode == "auto" and has_cycle:
      params, opt_state, values = jax.lax.platform_dependent(
        params, opt_state, cpu=choose_in_place, default=generic
      )
    else:
      params, opt_state, values = generic(params, opt_state)
    losses, aux = values if has_aux else (values, None)
    metrics: Metrics = {"loss": losses}
    if has_aux:
      metrics["aux"] = aux
    metrics.update(profit_diagnostics(opt_state))
    return params, opt_state, metrics

  return step


class _DispatchingStep:
  """The train step of a bare `profit`: picks the static cycle on the host.

  It knows the count without a device-to-host transfer when given the state
  its last call returned; traced, it runs the ``auto`` step.

  Attributes:
    lower: ``lower(params, opt_state, batches)`` of the ``auto`` step (for
      ahead-of-time compilation and memory analysis).
    calls: how many calls took a static cycle (``"cycle"``, from a cycle's
      start or mid-cycle) and the per-batch scan (``"generic"``); calls made
      under a trace (the ``auto`` step) are not counted.
  """

  def __init__(self, spec: _types.ProfitSpec, *, cycle, rotated, generic, auto):
    self._spec = spec
    self._cycle, self._generic, self._auto = cycle, generic, auto
    self._rotated = rotated  # offset -> the jitted step from that position
    self._last: tuple[Any, int] | None = None
    self.lower = auto.lower
    self.calls = {"cycle": 0, "generic": 0}  # which path each call took

  def _count(self, opt_state: Any) -> int | None:
    count = opt_state.count
    if self._last is not None and count is self._last[0]:
      return self._last[1]
    local = lambda x: (  # replicated across processes
      x if getattr(x, "is_fully_addressable", True) else x.addressable_data(0)
    )
    fields = (count, opt_state.cycle_length, opt_state.warmup_steps)
    try:  # one device-to-host transfer
      value, cycle_length, warmup_steps = jax.device_get(tuple(map(local, fields)))
    except Exception:  # pylint: disable=broad-except
      return None
    # A state from elsewhere (a checkpoint): refuse one built for another cycle.
    _validation.check_recorded(
      self._spec,
      opt_state._replace(cycle_length=cycle_length, warmup_steps=warmup_steps),
    )
    return int(value)

  def __call__(self, params, opt_state, batches, **extra_args):
    _check_array_params(params)
    count_array = getattr(opt_state, "count", None)
    if count_array is None or isinstance(count_array, jax.core.Tracer):
      return self._auto(params, opt_state, batches, **extra_args)
    count = self._count(opt_state)
    if count is None:
      return self._auto(params, opt_state, batches, **extra_args)
    steps = count - self._spec.warmup_steps
    if steps >= 0:  # past the warm-up: a static cycle from the call's position
      offset = steps % self._spec.cycle_length
      step = self._rotated(offset) if offset else self._cycle
      self.calls["cycle"] += 1
    else:
      step = self._generic
      self.calls["generic"] += 1
    params, opt_state, metrics = step(params, opt_state, batches, **extra_args)
    self._last = (opt_state.count, count + self._spec.cycle_length)
    return params, opt_state, metrics


def make_train_step(
  loss_fn: Callable[..., Any],
  tx: optax.GradientTransformation,
  *,
  has_aux: bool = False,
  cycle_length: int | None = None,
  donate: bool = True,
) -> TrainStep:
  """Builds a jitted train step that consumes one PROFIT cycle per call.

  The step computes what a Python loop of per-batch steps would (for each
  batch: the gradient of ``loss_fn`` at the current params, ``tx.update``,
  ``optax.apply_updates``), in one compiled call. ``params`` and
  ``opt_state`` are donated: their buffers are reused, so the arrays you pass
  in are deleted by the call (keep a copy of the pre-trained weights, e.g.
  ``jax.tree.map(jnp.copy, params)``, before the first call).

  For a bare :func:`optax_profit.profit` (int ``n_ref`` and
  ``warmup_steps``), a call that starts past the warm-up runs a *static
  cycle*: ``lax.scan`` over the reference batches, then the main step, with
  no phase selection (and, from a cycle boundary, no snapshot copy). A call
  that starts mid-cycle (after a warm-up that is not a multiple of
  ``n_ref + 1``, or after per-batch ``update`` calls) finishes that cycle and
  starts the next, its phases static as well, so every call after the
  warm-up takes it. Calls that hold warm-up steps scan over per-batch
  ``tx.update`` calls. The choice is made on the host from the step count,
  which the step tracks across calls without device-to-host transfers; a
  state it did not return itself (e.g. a restored checkpoint) is read once,
  and refused if it was built for another ``n_ref`` or ``warmup_steps``.
  The returned step counts the calls that took each path in its ``calls``
  attribute (``{"cycle": ..., "generic": ...}``). Called under ``jax.jit`` or ``lax.scan``, on CPU both paths are
  compiled and chosen on device; on GPU/TPU the traced step always takes the
  per-batch scan, which has no control flow. Results agree up to float
  rounding.

  Args:
    loss_fn: ``loss_fn(params, batch)`` returning a scalar loss (or ``(loss,
      aux)`` when ``has_aux``), where ``batch`` is one entry of the stacked
      ``batches`` (its leaves indexed along their leading axis).
    tx: the optimizer, usually ``optax_profit.profit(...)``. Any
      ``optax.GradientTransformation`` works when ``cycle_length`` is given.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    cycle_length: batches per call. For a bare ``profit`` it is ``n_ref + 1``
      (the default; another value is an error); required otherwise (e.g.
      ``n_ref + 1`` for ``optax.chain(clip, profit(...))``).
    donate: donate ``params`` and ``opt_state`` to the compiled step.

  Returns:
    ``step(params, opt_state, batches, **extra_args) -> (params, opt_state,
    metrics)``. Every leaf of ``batches`` is stacked with leading size
    ``cycle_length``; ``extra_args`` reach ``tx.update`` (PROFIT passes them
    to ``main`` and ``ref``). ``metrics`` holds ``loss`` (one per batch),
    ``aux`` (stacked, when ``has_aux``) and the last main step's diagnostics
    (see :func:`profit_diagnostics`).

  Equinox: split the model with ``params, static = eqx.partition(model,
  eqx.is_array)`` and rebuild it in ``loss_fn`` with ``eqx.combine(params,
  static)``. The partition shares the model's buffers: with ``donate=True``
  the first call deletes the model's arrays unless you pass a copy
  (``jax.tree.map(jnp.copy, params)``).

  Raises:
    TypeError: if ``cycle_length`` is needed and missing; when called with
      ``params`` that hold non-array leaves (an unpartitioned Equinox model).
    ValueError: if ``cycle_length`` contradicts a bare ``profit``'s cycle;
      when called with a leaf of `batches` of another leading size.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_profit
    >>> loss_fn = lambda p, b: jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2)
    >>> tx = optax_profit.profit(optax.adam(1e-3), ref=1e-4, n_ref=1)
    >>> step = optax_profit.make_train_step(loss_fn, tx)
    >>> params = {"w": jnp.zeros((3,))}
    >>> opt_state = tx.init(params)
    >>> batches = {"x": jnp.ones((2, 8, 3)), "y": jnp.ones((2, 8))}
    >>> params, opt_state, metrics = step(params, opt_state, batches)
    >>> metrics["loss"].shape
    (2,)
  """
  length = _cycle_length(tx, cycle_length)
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=has_aux)

  def jit(mode, offset=0):
    # keep_unused: an argument a step does not read (the storage, rewritten
    # by a cycle) must stay an argument, or its donated buffer is lost.
    return jax.jit(
      _build_step(
        value_and_grad, tx, length, has_aux=has_aux, mode=mode, offset=offset
      ),
      donate_argnums=(0, 1) if donate else (),
      keep_unused=True,
    )

  spec = _types.profit_spec(tx)
  if spec is None or not spec.is_static:
    generic = jit("generic")

    def step(params, opt_state, batches, **extra_args):
      _check_array_params(params)
      return generic(params, opt_state, batches, **extra_args)

    step.lower = generic.lower
    return step
  return _DispatchingStep(
    spec,
    cycle=jit("cycle"),
    rotated=functools.cache(lambda offset: jit("cycle", offset)),
    generic=jit("generic"),
    auto=jit("auto"),
  )
