"""A jit-compiled train step that runs one whole PROFIT cycle per call."""

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_profit import _inplace, _profit

Batch = Any
Metrics = dict[str, Any]
TrainStep = Callable[
    [optax.Params, optax.OptState, Batch],
    tuple[optax.Params, optax.OptState, Metrics],
]


def _cycle_length(
    tx: optax.GradientTransformation, cycle_length: int | None
) -> int:
  """Number of batches one call consumes."""
  if cycle_length is None:
    spec = _profit.profit_spec(tx)
    if spec is None:
      raise TypeError(
          "`cycle_length` is required when `tx` is not the transformation "
          "returned by optax_profit.profit (e.g. a chain containing it): pass "
          "cycle_length=n_ref + 1 (times k under optax.MultiSteps(..., k))."
      )
    if not isinstance(spec.n_ref, numbers.Integral):
      raise TypeError(
          "`cycle_length` is required when profit's `n_ref` is not a Python "
          f"int (got {type(spec.n_ref).__name__})."
      )
    cycle_length = int(spec.n_ref) + 1
  _profit._check_int("cycle_length", cycle_length, 1)  # pylint: disable=protected-access
  return int(cycle_length)


def check_stacked_batches(batches: Batch, cycle_length: int) -> None:
  """Raises ``ValueError`` unless every leaf of ``batches`` is stacked.

  Args:
    batches: a pytree of arrays whose leading axis indexes the batches.
    cycle_length: the expected leading size.

  Raises:
    ValueError: naming the sizes, if there are no leaves, a leaf is a scalar,
      the leaves disagree on the leading size (ragged), or it differs from
      ``cycle_length``.
  """
  leaves_with_path = jax.tree_util.tree_leaves_with_path(batches)
  if not leaves_with_path:
    raise ValueError("`batches` has no array leaves.")
  sizes = {}
  for path, leaf in leaves_with_path:
    name = jax.tree_util.keystr(path) or "<root>"
    shape = jnp.shape(leaf)
    if not shape:
      raise ValueError(
          f"`batches` leaf {name} is a scalar: every leaf needs a leading "
          f"axis of size {cycle_length} (one entry per batch of the cycle)."
      )
    sizes[name] = shape[0]
  if len(set(sizes.values())) > 1:
    listing = ", ".join(f"{k}: {v}" for k, v in sizes.items())
    raise ValueError(
        "`batches` is ragged: its leaves have different leading sizes "
        f"({listing}); all must be {cycle_length}."
    )
  (size,) = set(sizes.values())
  if size != cycle_length:
    raise ValueError(
        f"`batches` has leading size {size}, but one call consumes one PROFIT "
        f"cycle of {cycle_length} batches (n_ref + 1): stack exactly "
        f"{cycle_length} batches."
    )


def profit_diagnostics(opt_state: optax.OptState) -> Metrics:
  """The last main step's ``omega``, ``projected`` and ``delta_norm``.

  Args:
    opt_state: any optimizer state containing :class:`ProfitState` (directly
      or nested in chains, ``MultiSteps``, ``multi_transform``...).

  Returns:
    A dict with keys ``omega``, ``projected`` and ``delta_norm``: scalars when
    the state holds one :class:`ProfitState`, stacked along a leading axis (in
    pytree order) when it holds several, and an empty dict when none.
  """
  states = [
      leaf
      for leaf in jax.tree.leaves(
          opt_state, is_leaf=lambda x: isinstance(x, _profit.ProfitState)
      )
      if isinstance(leaf, _profit.ProfitState)
  ]
  if not states:
    return {}
  keys = ("omega", "projected", "delta_norm")
  if len(states) == 1:
    return {k: getattr(states[0], k) for k in keys}
  return {k: jnp.stack([getattr(s, k) for s in states]) for k in keys}


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
  ``optax.apply_updates``), in one compiled call with ``params`` and
  ``opt_state`` donated (their buffers are reused: do not read the arrays you
  passed in after the call).

  When ``tx`` is a bare :func:`optax_profit.profit` (int ``n_ref`` and
  ``warmup_steps``) and one call is one cycle, a call that starts at a cycle
  boundary past the warm-up runs the cycle with its phases known statically
  (``lax.scan`` over the reference batches, then the main step: no phase
  selection, no snapshot copy), which is much leaner than ``n_ref + 1``
  ``update`` calls; other calls (warm-up, a state left mid-cycle by per-batch
  ``update`` calls, or ``warmup_steps`` not a multiple of ``n_ref + 1``)
  ``lax.scan`` over per-batch ``tx.update`` calls. The choice is made on the
  host from the step count, which the step tracks across calls without
  device-to-host transfers (each path is compiled on first use); called
  under ``jax.jit`` or ``lax.scan``, both paths are compiled into one step
  that chooses on device (the loss is then traced three times). The results
  are the same up to float rounding; the state's ``theta_ref`` is scratch
  between cycles (see :class:`optax_profit.ProfitState`).

  Args:
    loss_fn: ``loss_fn(params, batch)`` returning a scalar loss, or
      ``(loss, aux)`` when ``has_aux``.
    tx: the optimizer, usually ``optax_profit.profit(...)``. Any
      ``optax.GradientTransformation`` works when ``cycle_length`` is given.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    cycle_length: batches per call. Defaults to ``n_ref + 1`` of ``tx`` when
      ``tx`` is returned by :func:`optax_profit.profit`; required otherwise
      (e.g. ``n_ref + 1`` for ``optax.chain(clip, profit(...))``).
    donate: donate ``params`` and ``opt_state`` to the compiled step.

  Returns:
    ``step(params, opt_state, batches) -> (params, opt_state, metrics)``: a
    ``jax.jit`` function, or for a bare ``profit`` a callable dispatching to
    such functions (with a ``lower`` method for ahead-of-time use). Every leaf of ``batches`` is stacked with leading size
    ``cycle_length``. ``metrics`` holds ``loss`` (one per batch), ``aux``
    (stacked, when ``has_aux``) and the last main step's ``omega``,
    ``projected`` and ``delta_norm`` (see :func:`profit_diagnostics`).

  Raises:
    TypeError: if ``cycle_length`` is needed and missing.
    ValueError: when called with batches of the wrong leading size or ragged
      leaves (the message names the sizes).

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

  def jit(mode):
    # keep_unused: an argument the step does not read (theta_ref, overwritten
    # by a cycle) must stay an argument, or its donated buffer is lost.
    return jax.jit(
        _build_step(value_and_grad, tx, length, has_aux=has_aux, mode=mode),
        donate_argnums=(0, 1) if donate else (),
        keep_unused=True,
    )

  if not _has_cycle(tx, length):
    return jit("generic")
  return _DispatchingStep(
      tx, length, cycle=jit("cycle"), generic=jit("generic"), auto=jit("auto")
  )


def _has_cycle(tx: optax.GradientTransformation, length: int) -> bool:
  """Whether ``tx`` is a bare `profit` whose static cycle is ``length``."""
  parts = getattr(tx, "_parts", None)
  return (
      _profit.profit_spec(tx) is not None
      and parts is not None
      and parts.n_ref + 1 == length
  )


class _DispatchingStep:
  """The train step of a bare `profit`: the static cycle when aligned.

  Called with concrete arrays, it picks on the host between two jitted steps:
  the static cycle when the state is at a cycle boundary past the warm-up,
  else the scan of per-call updates. It knows the step count without a
  device-to-host transfer when given the state its last call returned
  (``count`` is then the last count plus one cycle), and reads it from the
  device otherwise (once per foreign state). Traced (inside ``jax.jit``,
  ``lax.scan``...), or when the count cannot be read, it runs the ``auto``
  step, which compiles both paths and chooses on device. Either way the
  results are the same.

  Attributes:
    lower: ``lower(params, opt_state, batches)`` of the ``auto`` step (for
      ahead-of-time compilation and memory analysis).
  """

  def __init__(self, tx, length, *, cycle, generic, auto):
    parts = tx._parts  # pylint: disable=protected-access
    self._warmup = parts.warmup_steps
    self._length = length
    self._cycle, self._generic, self._auto = cycle, generic, auto
    self._last: tuple[Any, int] | None = None
    self.lower = auto.lower

  def _count(self, count: Any) -> int | None:
    if self._last is not None and count is self._last[0]:
      return self._last[1]
    try:
      if not getattr(count, "is_fully_addressable", True):
        count = count.addressable_data(0)  # replicated across processes
      return int(jax.device_get(count))
    except Exception:  # pylint: disable=broad-except
      return None

  def __call__(
      self, params: optax.Params, opt_state: optax.OptState, batches: Batch
  ) -> tuple[optax.Params, optax.OptState, Metrics]:
    count_array = getattr(opt_state, "count", None)
    if count_array is None or isinstance(count_array, jax.core.Tracer):
      return self._auto(params, opt_state, batches)
    count = self._count(count_array)
    if count is None:
      return self._auto(params, opt_state, batches)
    steps = count - self._warmup
    aligned = steps >= 0 and steps % self._length == 0
    step = self._cycle if aligned else self._generic
    params, opt_state, metrics = step(params, opt_state, batches)
    self._last = (opt_state.count, count + self._length)
    return params, opt_state, metrics


def _build_step(
    value_and_grad: Callable[..., Any],
    tx: optax.GradientTransformation,
    length: int,
    *,
    has_aux: bool,
    mode: str = "auto",
) -> Callable[..., Any]:
  """The (unjitted) train step of :func:`make_train_step`.

  Args:
    value_and_grad: ``jax.value_and_grad(loss_fn, has_aux=has_aux)``.
    tx: the optimizer.
    length: batches per call.
    has_aux: whether values are ``(loss, aux)``.
    mode: ``"generic"``: ``lax.scan`` of per-batch ``tx.update`` calls;
      ``"cycle"``: :func:`optax_profit._profit.run_cycle` only (the caller
      guarantees a state at a cycle boundary); ``"auto"``: ``"cycle"`` when
      ``tx`` is a bare :func:`optax_profit.profit` whose cycle is
      ``length`` batches and the state is at a cycle boundary past the
      warm-up, else ``"generic"`` (both are compiled; the choice is made on
      device, in place).

  Returns:
    ``step(params, opt_state, batches) -> (params, opt_state, metrics)``.
  """
  has_cycle = _has_cycle(tx, length)
  if mode not in ("auto", "generic", "cycle"):
    raise ValueError(f"unknown mode {mode!r}")
  if mode == "cycle" and not has_cycle:
    raise ValueError("`tx` has no static cycle of `length` batches.")
  use_cycle = has_cycle and mode != "generic"

  def generic(params, opt_state, batches):
    def body(carry, batch):
      params, opt_state = carry
      value, grads = value_and_grad(params, batch)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return (params, opt_state), value

    (params, opt_state), values = jax.lax.scan(
        body, (params, opt_state), batches
    )
    return params, opt_state, values

  def cycle(params, opt_state, batches):
    return _profit.run_cycle(tx, value_and_grad, params, opt_state, batches)

  def step(
      params: optax.Params, opt_state: optax.OptState, batches: Batch
  ) -> tuple[optax.Params, optax.OptState, Metrics]:
    check_stacked_batches(batches, length)
    if not use_cycle:
      params, opt_state, values = generic(params, opt_state, batches)
    elif mode == "cycle":
      params, opt_state, values = cycle(params, opt_state, batches)
    else:
      # Both paths update (params, opt_state, values) in place; exactly one
      # runs. The cycle needs a state at a cycle boundary past the warm-up.
      aligned = _profit.cycle_aligned(tx, opt_state)
      value_shape = jax.eval_shape(
          value_and_grad, params, jax.tree.map(lambda x: x[0], batches)
      )[0]
      values = jax.tree.map(
          lambda v: jnp.zeros((length, *v.shape), v.dtype), value_shape
      )
      carry = (params, opt_state, values)
      carry = _inplace.run_if(aligned, lambda c: cycle(c[0], c[1], batches), carry)
      carry = _inplace.run_if(
          ~aligned, lambda c: generic(c[0], c[1], batches), carry
      )
      params, opt_state, values = carry
    losses, aux = values if has_aux else (values, None)
    metrics: Metrics = {"loss": losses}
    if has_aux:
      metrics["aux"] = aux
    metrics.update(profit_diagnostics(opt_state))
    return params, opt_state, metrics

  return step
