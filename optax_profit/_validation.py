"""The argument and state checks of :func:`optax_profit.profit`.

Each check raises a ``TypeError`` or ``ValueError`` that names what to change;
none of them computes anything the optimizer uses.
"""

import numbers
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

if TYPE_CHECKING:
  from optax_profit._types import ProfitSpec, ProfitState

INT32_MAX = 2**31 - 1


def is_tracer(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


def as_int(name: str, value: Any, minimum: int, maximum: int = INT32_MAX) -> Any:
  """A concrete integer as a Python int (checked); traced integers pass.

  A traced value (e.g. under ``optax.inject_hyperparams``) is checked for an
  integer dtype only: its value is unknown until the step runs.
  """
  if is_tracer(value):
    if not jnp.issubdtype(value.dtype, jnp.integer) or value.ndim:
      raise TypeError(
        f"`{name}` must be an int, got a traced {value.dtype} array of shape "
        f"{value.shape} (optax.inject_hyperparams traces a float {name} as a "
        f"float): pass a Python int, or name it in `static_args`."
      )
    return value
  if isinstance(value, (bool, np.bool_)):
    raise TypeError(f"`{name}` must be an int, got the bool {value!r}.")
  is_int_array = (
    isinstance(value, (jax.Array, np.ndarray))
    and value.ndim == 0
    and jnp.issubdtype(value.dtype, jnp.integer)
  )
  if not (isinstance(value, numbers.Integral) or is_int_array):
    raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}.")
  if int(value) < minimum:
    raise ValueError(f"`{name}` must be >= {minimum}, got {int(value)}.")
  if int(value) > maximum:
    raise ValueError(
      f"`{name}` must be <= {maximum} (the step count is an int32), got {int(value)}."
    )
  return int(value)


def _injected_schedules(frame: Any) -> set[str]:
  """The arguments `optax.inject_hyperparams` schedules, when it calls `profit`.

  ``optax.inject_hyperparams(profit)(main, ref=schedule)`` evaluates the
  schedule at its own count, once per ``update`` call, and passes `profit` the
  value: `profit` alone cannot tell it from a constant. The caller's frame
  (inject_hyperparams' ``init``/``update``) holds the schedules by name.
  """
  code = frame.f_code if frame is not None else None
  if code is None or not code.co_filename.endswith("_inject.py"):
    return set()
  schedules = frame.f_locals.get("sched_hps")
  return set(schedules) if isinstance(schedules, dict) else set()


def refuse_injected_schedules(frame: Any) -> None:
  """Raises ``ValueError`` if inject_hyperparams schedules an argument of `profit`."""
  scheduled = _injected_schedules(frame) & {"ref", "n_ref", "warmup_steps"}
  if "ref" in scheduled:
    raise ValueError(
      "optax.inject_hyperparams(profit) would evaluate the `ref` schedule at "
      "its own count, once per update call, but PROFIT's reference learning "
      "rate counts reference steps only: pass the schedule through, with "
      "optax.inject_hyperparams(optax_profit.profit, static_args=('ref',)), "
      "or call optax_profit.profit(main, ref=schedule) directly."
    )
  if scheduled:
    name = sorted(scheduled)[0]
    raise ValueError(
      f"`{name}` cannot be a schedule: it fixes the phase of every call. "
      "Pass an int (in `static_args` under optax.inject_hyperparams)."
    )


def reference_optimizer(ref: Any) -> optax.GradientTransformationExtraArgs:
  """The reference optimizer of the `ref` argument."""
  if isinstance(ref, optax.GradientTransformation):
    return optax.with_extra_args_support(ref)
  if callable(ref):  # A schedule of the reference learning rate.
    return optax.sgd(ref)
  if isinstance(ref, (bool, np.bool_)) or not (
    isinstance(ref, numbers.Real)
    or (isinstance(ref, (jax.Array, np.ndarray)) and ref.ndim == 0)
  ):
    raise TypeError(
      "`ref` must be a float learning rate, an optax schedule or an "
      f"optax.GradientTransformation, got {type(ref).__name__} {ref!r}."
    )
  if not is_tracer(ref) and not (np.isfinite(float(ref)) and float(ref) >= 0):
    raise ValueError(
      f"`ref` (the reference learning rate) must be finite and >= 0, got {float(ref)}."
    )
  return optax.sgd(ref)


def check_layout(grads: optax.Updates, params: optax.Params) -> None:
  """Raises ``ValueError`` naming the leaf where grads and params disagree."""
  leaves = jax.tree_util.tree_leaves_with_path
  g, p = ({jax.tree_util.keystr(k): v for k, v in leaves(t)} for t in (grads, params))
  if g.keys() != p.keys():
    raise ValueError(
      "The gradient and `params` have different pytree structures: leaves "
      f"only in the gradient: {sorted(g.keys() - p.keys())}; only in params: "
      f"{sorted(p.keys() - g.keys())}."
    )
  for name, leaf in g.items():
    if jnp.shape(leaf) != jnp.shape(p[name]):
      raise ValueError(
        f"Leaf {name or '<root>'}: the gradient has shape {jnp.shape(leaf)} but "
        f"params have shape {jnp.shape(p[name])}."
      )


def as_arrays(tree: Any) -> Any:
  """Python and NumPy scalar leaves as arrays (as optax's own transforms see them)."""
  scalar = lambda x: (
    isinstance(x, (numbers.Number, np.number)) and not isinstance(x, (bool, np.bool_))
  )
  return jax.tree.map(lambda x: jnp.asarray(x) if scalar(x) else x, tree)


def without_frozen(grads: optax.Updates, params: optax.Params) -> optax.Params:
  """``params`` with ``None`` where the gradient is ``None`` (Equinox).

  ``eqx.filter_grad`` gives ``None`` for the model's non-array leaves (and
  for arrays it does not differentiate), while ``tx.update(grads, state,
  model)`` gets the whole model: those leaves get no update.
  """
  is_none = lambda x: x is None
  if not any(g is None for g in jax.tree.leaves(grads, is_leaf=is_none)):
    return params
  try:
    return jax.tree.map(
      lambda g, p: None if g is None else p, grads, params, is_leaf=is_none
    )
  except (ValueError, TypeError):
    return params  # check_layout names the difference


def check_recorded(spec: "ProfitSpec", state: "ProfitState") -> None:
  """Refuses a state recorded for another cycle (when both are concrete)."""
  for name, recorded, value in (
    ("n_ref", state.cycle_length, spec.cycle_length),
    ("warmup_steps", state.warmup_steps, spec.warmup_steps),
  ):
    if any(is_tracer(x) for x in (recorded, value)):
      continue
    recorded = int(np.asarray(recorded))
    if name == "n_ref":
      recorded, value = recorded - 1, value - 1
    if recorded != int(value):
      raise ValueError(
        f"The optimizer state was built for {name}={recorded}, but this profit "
        f"has {name}={int(value)}: its count would land in the wrong phase. "
        f"Restore it into profit(..., {name}={recorded}) (a state can't change "
        "its cycle)."
      )


def _check_storage(
  spec: "ProfitSpec", state: "ProfitState", params: optax.Params
) -> None:
  """Refuses (at trace time) a state built with another storage or delta dtype."""
  kind = spec.storage.kind
  other = "delta" if kind == "copy" else "theta_ref"
  stored = getattr(state, spec.storage.field)
  if stored is None or getattr(state, other) is not None:
    built = "copy" if state.theta_ref is not None else "delta"
    raise ValueError(
      f"The optimizer state was built with storage={built!r}, but this profit "
      f"has storage={kind!r}: restore it into a profit with storage={built!r}."
    )
  expected = jax.eval_shape(spec.storage.init, params)
  leaves = jax.tree_util.tree_leaves_with_path
  want = {jax.tree_util.keystr(k): v for k, v in leaves(expected)}
  have = {jax.tree_util.keystr(k): v for k, v in leaves(stored)}
  if want.keys() != have.keys():
    raise ValueError(
      f"The optimizer state's `{spec.storage.field}` does not match `params`: "
      f"leaves only in the state: {sorted(have.keys() - want.keys())}; only in "
      f"params: {sorted(want.keys() - have.keys())}. Build the state with "
      "tx.init on the same params (a gradient of None leaves a param frozen "
      "only where the state has no entry either, e.g. "
      "tx.init(eqx.filter(model, eqx.is_array)))."
    )
  for name, leaf in want.items():
    got = have[name]
    if (jnp.shape(got), jnp.result_type(got)) != (leaf.shape, leaf.dtype):
      what = "delta_dtype" if kind == "delta" else "params dtype"
      raise ValueError(
        f"Leaf {name or '<root>'} of the optimizer state's `{spec.storage.field}` "
        f"is {jnp.result_type(got)}{list(jnp.shape(got))}, but this profit "
        f"expects {leaf.dtype}{list(leaf.shape)}: the state was built with "
        f"another {what} (storage={spec.storage})."
      )


def check_state(spec: "ProfitSpec", state: "ProfitState", params: optax.Params) -> None:
  """Refuses ``state`` if it was built for another profit than ``spec``'s.

  The storage kind, the delta dtype and the layout are checked at trace time;
  ``n_ref`` and ``warmup_steps`` only when the state's recorded values are
  concrete (not under ``jit``).
  """
  _check_storage(spec, state, params)
  check_recorded(spec, state)
