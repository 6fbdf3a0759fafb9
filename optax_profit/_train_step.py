"""A jit-compiled train step that runs one whole PROFIT cycle per call."""

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_profit import _profit

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

  The step ``lax.scan``s over the leading axis of ``batches``: for each batch
  it takes the gradient of ``loss_fn`` at the current params, calls
  ``tx.update`` and applies the updates, exactly as a Python loop of per-batch
  steps would, but in one compiled call with ``params`` and ``opt_state``
  donated (their buffers are reused: do not read the arrays you passed in
  after the call).

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
    A jitted ``step(params, opt_state, batches) -> (params, opt_state,
    metrics)``. Every leaf of ``batches`` is stacked with leading size
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

  def step(
      params: optax.Params, opt_state: optax.OptState, batches: Batch
  ) -> tuple[optax.Params, optax.OptState, Metrics]:
    check_stacked_batches(batches, length)

    def body(carry, batch):
      params, opt_state = carry
      value, grads = value_and_grad(params, batch)
      loss, aux = value if has_aux else (value, None)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return (params, opt_state), (loss, aux)

    (params, opt_state), (losses, aux) = jax.lax.scan(
        body, (params, opt_state), batches
    )
    metrics: Metrics = {"loss": losses}
    if has_aux:
      metrics["aux"] = aux
    metrics.update(profit_diagnostics(opt_state))
    return params, opt_state, metrics

  return jax.jit(step, donate_argnums=(0, 1) if donate else ())
