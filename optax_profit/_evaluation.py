"""The weights to evaluate or checkpoint, read from any state holding PROFIT's.

Inside a cycle (after its reference steps, before its main step) the params
are temporary: the main step restores ``theta_ref`` and steps from there. The
weights PROFIT stands behind are then ``theta_ref``; at a cycle boundary (and
during the warm-up) they are the params. ``optax.lookahead`` exposes its slow
weights for the same reason.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_profit import _types
from optax_profit._storage import Storage


def _read(x: Any) -> Any:
  """The value of an ``nnx.Optimizer`` state variable (else ``x``)."""
  return x.get_value() if callable(getattr(x, "get_value", None)) else x


def _is_variable(x: Any) -> bool:
  return callable(getattr(x, "get_value", None))


def _is_hole(x: Any) -> bool:
  """A position with no state: ``None`` (Equinox filter) or ``MaskedNode``."""
  return x is None or isinstance(x, optax.MaskedNode)


def profit_states(opt_state: Any) -> list[_types.ProfitState]:
  """Every :class:`ProfitState` in ``opt_state``, in pytree order.

  Finds them inside ``optax.chain``, ``MultiSteps``, ``inject_hyperparams``,
  ``multi_transform``, ``masked``, Flax ``TrainState`` and
  ``nnx.Optimizer(...).opt_state`` (whose variables it reads).
  """
  is_state = lambda x: isinstance(x, _types.ProfitState)
  states = [s for s in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(s)]
  return [jax.tree.map(_read, s, is_leaf=_is_variable) for s in states]


def _states(opt_state: Any) -> list[_types.ProfitState]:
  states = profit_states(opt_state)
  if not states:
    raise ValueError(
      "`opt_state` holds no optax_profit.ProfitState: pass the state of a "
      "transformation built with optax_profit.profit (it may be nested in "
      "optax.chain, MultiSteps, inject_hyperparams, multi_transform, a Flax "
      f"TrainState or nnx.Optimizer's opt_state), got {type(opt_state).__name__}."
    )
  return states


def _in_cycle(state: _types.ProfitState) -> jax.Array:
  """Whether the last call left ``state`` inside a cycle (before its main step)."""
  steps = state.count - state.warmup_steps
  return (steps > 0) & (steps % state.cycle_length != 0)


def cycle_ended(opt_state: Any) -> jax.Array:
  """Whether the params after the last ``update`` are at a cycle boundary.

  True before the first call, after every warm-up step and after every main
  step; false after a reference step (the params are then temporary, see
  :func:`eval_params`). Jit-able.

  Args:
    opt_state: the state of a ``profit`` transformation, or any state holding
      one: ``optax.chain``, ``optax.MultiSteps``, ``optax.inject_hyperparams``,
      ``optax.multi_transform``/``masked`` states, a Flax ``TrainState``,
      ``nnx.Optimizer(...).opt_state``. Under ``MultiSteps`` it describes the
      inner ``profit`` (true from a main step until the next reference step
      applies, accumulation calls included).

  Returns:
    A boolean scalar; with several PROFIT states, whether all are at a
    boundary.

  Raises:
    ValueError: if ``opt_state`` holds no :class:`ProfitState`.

  Example:
    >>> import jax.numpy as jnp, optax, optax_profit
    >>> tx = optax_profit.profit(optax.sgd(0.1), ref=0.01, n_ref=1)
    >>> params = {"w": jnp.array([1.0, 2.0])}
    >>> state = tx.init(params)
    >>> ended = []
    >>> for _ in range(2):  # a reference step, then the main step
    ...   updates, state = tx.update({"w": jnp.ones(2)}, state, params)
    ...   params = optax.apply_updates(params, updates)
    ...   ended.append(bool(optax_profit.cycle_ended(state)))
    >>> ended
    [False, True]
  """
  flags = [~_in_cycle(s) for s in _states(opt_state)]
  return flags[0] if len(flags) == 1 else jnp.all(jnp.stack(flags))


def _leaf_paths(tree: Any) -> set[str]:
  return {jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(tree)}


def eval_params(params: optax.Params, opt_state: Any) -> optax.Params:
  """The weights to evaluate or checkpoint after any ``update`` call.

  Inside a cycle (after a reference step) these are ``theta_ref``, the
  weights the cycle started from and that its main step returns to; at a
  cycle boundary, during the warm-up and before the first call they are
  ``params`` themselves. Evaluating the params mid-cycle measures weights that
  PROFIT is about to discard. Jit-able (the phase is selected with
  ``jnp.where``); the result is a new tree, ``params`` are not modified.

  Args:
    params: the current weights (what ``tx.update`` was given, e.g.
      ``TrainState.params``, the whole Equinox model, or
      ``nnx.state(model, nnx.Param)``).
    opt_state: the optimizer state after the last call (see
      :func:`cycle_ended` for the wrappers it looks through). With
      ``multi_transform`` PROFIT on some leaves, the other leaves are returned
      as they are.

  Returns:
    A tree of the structure of ``params``.

  Raises:
    ValueError: if ``opt_state`` holds no :class:`ProfitState`, or several
      that cover the same leaf (e.g. two ``profit`` in one chain).

  Example:
    >>> import jax.numpy as jnp, optax, optax_profit
    >>> tx = optax_profit.profit(optax.sgd(0.1), ref=0.5, n_ref=1)
    >>> params = {"w": jnp.array([1.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([1.0])}, state, params)
    >>> params = optax.apply_updates(params, updates)  # a reference step
    >>> params["w"], optax_profit.eval_params(params, state)["w"]
    (Array([0.5], dtype=float32), Array([1.], dtype=float32))
  """
  covered: set[str] = set()
  out = params
  for state in _states(opt_state):
    storage = Storage("copy" if state.theta_ref is not None else "delta")
    stored = getattr(state, storage.field)
    paths = _leaf_paths(stored)
    if paths & covered:
      raise ValueError(
        "Several PROFIT states cover the leaves "
        f"{sorted(paths & covered)}: eval_params cannot tell which to restore."
      )
    covered |= paths
    try:
      sub = jax.tree.map(
        lambda s, p: s if _is_hole(s) else _read(p), stored, params, is_leaf=_is_hole
      )
    except (ValueError, TypeError) as e:
      raise ValueError(
        "`params` do not have the structure of the PROFIT state's "
        f"`{storage.field}` (pass the params `tx.update` was given): {e}"
      ) from e
    ref = storage.restore(stored, sub)
    inside = _in_cycle(state)

    def pick(r, p, o, inside=inside):
      value = jnp.where(inside, r, p).astype(jnp.result_type(p))
      return o.replace(value) if _is_variable(o) else value  # nnx.Param stays one

    out = jax.tree.map(
      lambda s, r, p, o: o if _is_hole(s) else pick(r, p, o),
      stored,
      ref,
      sub,
      out,
      is_leaf=_is_hole,
    )
  return out
