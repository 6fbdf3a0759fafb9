"""PROFIT: a fine-tuning optimizer wrapper (Algorithm 1 of the paper).

Algorithm 1 is written once, as :func:`reference_step` (lines 6-9) and
:func:`main_step` (lines 12-19). Two drivers call them: the per-call
``update`` of :func:`profit` (one call per batch, what ``optax.chain``, Flax
``TrainState`` and ``nnx.Optimizer`` use) and the static cycle of
:func:`optax_profit.make_train_step`.
"""

import dataclasses
import numbers
import sys
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_profit import _projection
from optax_profit._storage import Storage, _where, storage_from_args

DIAGNOSTICS = ("omega", "delta_norm", "cosine", "removed_fraction", "projected")
T = TypeVar("T")


class ProfitState(NamedTuple):
  """State of :func:`profit`.

  Attributes:
    count: number of ``update`` calls so far (int32), warm-up included.
    theta_ref: with ``storage="copy"``, the weights saved at the start of the
      current cycle; ``None`` otherwise. Only meaningful inside a cycle: after
      a cycle run by :func:`optax_profit.make_train_step` it holds scratch.
    ref_state: state of the reference optimizer; it persists across cycles.
    main_state: state of the main optimizer; it advances once per cycle (and
      once per warm-up step).
    omega: ``<delta, g>`` of the last main step (0 before the first one).
    delta_norm: ``||delta||`` of the last main step.
    cosine: cosine between the last main step's gradient ``g`` and ``delta``.
    removed_fraction: ``||g - g'|| / ||g||`` of the last main step, the
      fraction of the gradient's norm removed by the projection.
    projected: whether the last main step projected its gradient.
    delta: with ``storage="delta"`` (the default), per leaf: for float32 and
      float64 params the current cycle's displacement ``theta - theta_ref``,
      accumulated from the reference updates; for bfloat16 and float16 params
      an ``Anchor`` (``theta_ref`` and the residual the reference updates did
      not apply). ``None`` otherwise.
    cycle_length: the ``n_ref + 1`` the state was built and last updated
      with (int32). ``update`` refuses a state recorded for another cycle
      when both are concrete (outside ``jit``), and
      :func:`optax_profit.make_train_step` checks it on the host;
      :func:`optax_profit.eval_params` reads the phase from it.
    warmup_steps: likewise, the ``warmup_steps`` (int32).
  """

  count: jax.Array
  theta_ref: optax.Params | None
  ref_state: optax.OptState
  main_state: optax.OptState
  omega: jax.Array
  delta_norm: jax.Array
  cosine: jax.Array
  removed_fraction: jax.Array
  projected: jax.Array
  delta: optax.Updates | None
  cycle_length: jax.Array
  warmup_steps: jax.Array


@dataclasses.dataclass(frozen=True)
class ProfitSpec:
  """The frozen description of a :func:`profit` transformation.

  Read it with :func:`profit_spec` (or ``tx.spec``).

  Attributes:
    main: the main optimizer ``O``.
    ref: the reference optimizer ``O_ref``.
    n_ref: reference steps per cycle (a Python int, or traced under
      ``optax.inject_hyperparams``).
    warmup_steps: leading plain ``main`` steps (likewise).
    storage: how the start of a cycle is kept (:class:`Storage`).
  """

  main: optax.GradientTransformationExtraArgs
  ref: optax.GradientTransformationExtraArgs
  n_ref: Any
  warmup_steps: Any
  storage: Storage

  @property
  def cycle_length(self) -> Any:
    """Batches (``update`` calls) per cycle: ``n_ref + 1``."""
    return self.n_ref + 1

  @property
  def is_static(self) -> bool:
    """Whether ``n_ref`` and ``warmup_steps`` are Python ints."""
    return isinstance(self.n_ref, int) and isinstance(self.warmup_steps, int)


class ProfitTransformation(optax.GradientTransformationExtraArgs):
  """The :class:`optax.GradientTransformationExtraArgs` returned by `profit`.

  A plain ``(init, update)`` pair to optax; it also carries ``spec``, its
  :class:`ProfitSpec`.
  """

  spec: ProfitSpec


def profit_spec(tx: optax.GradientTransformation) -> ProfitSpec | None:
  """Returns the :class:`ProfitSpec` of ``tx`` if `profit` built it, else None.

  Example:
    >>> import optax, optax_profit
    >>> tx = optax_profit.profit(optax.sgd(1e-2), ref=1e-3, n_ref=3)
    >>> optax_profit.profit_spec(tx).cycle_length
    4
    >>> optax_profit.profit_spec(optax.sgd(1e-2)) is None
    True
  """
  return getattr(tx, "spec", None) if isinstance(tx, ProfitTransformation) else None


# ------------------------------------------------------------ Algorithm 1
def reference_step(
  spec: ProfitSpec,
  grads: optax.Updates,
  params: optax.Params,
  ref_state: optax.OptState,
  extra_args: dict[str, Any],
) -> tuple[optax.Updates, optax.OptState]:
  """Line 9: the reference optimizer's updates, in at least float32.

  Gradients narrower than float32 (bfloat16, float16) are widened first, so
  that small reference updates do not underflow. Line 6 (``theta_ref <-
  theta`` on a cycle's first reference step) and the rounding of these
  updates to the params' dtypes are the storage's :meth:`Storage.record`.
  """
  wide = jax.tree.map(
    lambda g: g.astype(jnp.promote_types(g.dtype, jnp.float32)), grads
  )
  updates, new_ref_state = spec.ref.update(wide, ref_state, params, **extra_args)
  updates = jax.tree.map(
    lambda u, p: u.astype(jnp.result_type(u, p, jnp.float32)), updates, params
  )
  return updates, optax.tree.cast_like(new_ref_state, ref_state)


def main_step(
  spec: ProfitSpec,
  grads: optax.Updates,
  params: optax.Params,
  stored: optax.Params,
  main_state: optax.OptState,
  extra_args: dict[str, Any],
  in_cycle: Any = True,
) -> tuple[optax.Updates, optax.OptState, _projection.Projection]:
  """Lines 12-19: project ``g`` against ``delta``, restore, step ``O``.

  With ``in_cycle`` false (warm-up) the displacement counts as zero: a plain
  ``main`` step at ``params``.

  Returns:
    ``(updates, main_state, projection)``: ``updates`` take the weights to
    ``theta_ref + O(theta_ref, g')``.
  """

  delta = jax.tree.map(  # line 12
    lambda d: _where(in_cycle, d, jnp.zeros_like(d)),
    spec.storage.displacement(stored, params),
  )
  proj = _projection.project_conflicting(grads, delta)  # lines 13-17
  theta_ref = jax.tree.map(  # line 18
    lambda r, p: _where(in_cycle, r, p), spec.storage.restore(stored, params), params
  )
  main_updates, new_main_state = spec.main.update(  # line 19
    proj.updates, main_state, theta_ref, **extra_args
  )
  offset = jax.tree.map(  # theta - theta_ref, as the restore undoes it
    lambda d: _where(in_cycle, d, jnp.zeros_like(d)),
    spec.storage.offset(stored, params),
  )
  updates = jax.tree.map(  # theta_ref + main_updates - theta, in >= float32
    lambda u, d, p: (u.astype(d.dtype) - d).astype(p.dtype),
    main_updates,
    offset,
    params,
  )
  return updates, optax.tree.cast_like(new_main_state, main_state), proj


# ------------------------------------------------------- per-call driver
class _Phase(NamedTuple):
  in_cycle: Any  # past the warm-up (Python True without one)
  first: Any  # the cycle's first reference step
  is_ref: Any  # a reference step


def _phase(spec: ProfitSpec, count: jax.Array) -> _Phase:
  """Where call number ``count`` falls: warm-up, reference or main step."""
  steps = count - jnp.asarray(spec.warmup_steps, count.dtype)
  pos = steps % jnp.asarray(spec.cycle_length, count.dtype)
  if isinstance(spec.warmup_steps, int) and not spec.warmup_steps:
    return _Phase(True, pos == 0, pos < spec.n_ref)
  in_cycle = steps >= 0
  return _Phase(in_cycle, (pos == 0) & in_cycle, (pos < spec.n_ref) & in_cycle)


def _pick(pred: Any, a: Any, b: Any) -> Any:
  return jax.tree.map(lambda x, y: _where(pred, x, y), a, b)


def projection_diagnostics(proj: _projection.Projection, state: ProfitState) -> tuple:
  """The diagnostics of ``proj`` in the dtypes of ``state``'s."""
  return tuple(getattr(proj, k).astype(getattr(state, k).dtype) for k in DIAGNOSTICS)


def diagnostics_of(state: ProfitState) -> tuple:
  """The diagnostics ``state`` holds, in the order of ``DIAGNOSTICS``."""
  return tuple(getattr(state, k) for k in DIAGNOSTICS)


def with_diagnostics(state: ProfitState, values: tuple) -> ProfitState:
  """``state`` with its diagnostics replaced by ``values`` (``DIAGNOSTICS`` order)."""
  return state._replace(**dict(zip(DIAGNOSTICS, values, strict=True)))


def _select_update(spec, grads, state, params, extra_args):
  """Both steps computed, the phase's results selected: no control flow.

  XLA:GPU copies the predicate of every ``while`` and ``conditional`` to the
  host and waits for it; selecting with ``jnp.where`` keeps the call on
  device (as ``optax.MultiSteps`` does).
  """
  phase = _phase(spec, state.count)
  stored = getattr(state, spec.storage.field)
  ref_updates, ref_state = reference_step(
    spec, grads, params, state.ref_state, extra_args
  )
  ref_stored, ref_updates = spec.storage.record(
    stored, params, ref_updates, phase.first
  )
  main_updates, main_state, proj = main_step(
    spec, grads, params, stored, state.main_state, extra_args, phase.in_cycle
  )
  state = state._replace(
    count=state.count + 1,
    ref_state=_pick(phase.is_ref, ref_state, state.ref_state),
    main_state=_pick(phase.is_ref, state.main_state, main_state),
    **{spec.storage.field: _pick(phase.is_ref, ref_stored, stored)},
  )
  diagnostics = projection_diagnostics(proj, state)
  state = with_diagnostics(
    state, _pick(phase.is_ref, diagnostics_of(state), diagnostics)
  )
  return _pick(phase.is_ref, ref_updates, main_updates), state


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


def _in_place_update(spec, grads, state, params, extra_args):
  """Only the phase's step runs, inside zero-or-one-trip loops (XLA:CPU).

  A ``while`` loop updates its carry in place (a ``lax.cond`` would copy the
  untouched state), and on CPU its predicate costs no device sync. The
  updates are written into the gradient's buffer when the layouts agree.
  """
  phase = _phase(spec, state.count)
  same_layout = jax.tree.map(lambda g, p: (g.shape, g.dtype), grads, params) == (
    jax.tree.map(lambda p: (p.shape, p.dtype), params)
  )
  slot = grads if same_layout else jax.tree.map(jnp.zeros_like, params)
  read = (lambda carried: carried) if same_layout else (lambda carried: grads)
  stored = getattr(state, spec.storage.field)

  def reference(carry):
    carried, ref_state = carry
    return reference_step(spec, read(carried), params, ref_state, extra_args)

  def record(carry):  # reads the updates from the buffer the first loop wrote
    ref_updates, stored = carry
    stored, ref_updates = spec.storage.record(stored, params, ref_updates, phase.first)
    return optax.tree.cast_like(ref_updates, carry[0]), stored

  def reference_and_record(carry):
    carried, ref_state, stored = carry
    ref_updates, ref_state = reference((carried, ref_state))
    stored, ref_updates = spec.storage.record(stored, params, ref_updates, phase.first)
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
    updates, main_state, proj = main_step(
      spec, read(carried), params, stored, main_state, extra_args, phase.in_cycle
    )
    return updates, main_state, projection_diagnostics(proj, state)

  slot, main_state, diagnostics = run_if(
    ~phase.is_ref, main, (slot, state.main_state, diagnostics_of(state))
  )
  state = state._replace(
    count=state.count + 1,
    ref_state=ref_state,
    main_state=main_state,
    **{spec.storage.field: stored},
  )
  return slot, with_diagnostics(state, diagnostics)


# ------------------------------------------------------------- the factory
INT32_MAX = 2**31 - 1


def _is_tracer(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


def _as_int(name: str, value: Any, minimum: int, maximum: int = INT32_MAX) -> Any:
  """A concrete integer as a Python int (checked); traced integers pass.

  A traced value (e.g. under ``optax.inject_hyperparams``) is checked for an
  integer dtype only: its value is unknown until the step runs.
  """
  if _is_tracer(value):
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


def _refuse_injected_schedules(frame: Any) -> None:
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


def _reference_optimizer(ref: Any) -> optax.GradientTransformationExtraArgs:
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
  if not _is_tracer(ref) and not (np.isfinite(float(ref)) and float(ref) >= 0):
    raise ValueError(
      f"`ref` (the reference learning rate) must be finite and >= 0, got {float(ref)}."
    )
  return optax.sgd(ref)


def _check_layout(grads: optax.Updates, params: optax.Params) -> None:
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


def _as_arrays(tree: Any) -> Any:
  """Python and NumPy scalar leaves as arrays (as optax's own transforms see them)."""
  scalar = lambda x: (
    isinstance(x, (numbers.Number, np.number)) and not isinstance(x, (bool, np.bool_))
  )
  return jax.tree.map(lambda x: jnp.asarray(x) if scalar(x) else x, tree)


def _without_frozen(grads: optax.Updates, params: optax.Params) -> optax.Params:
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
    return params  # _check_layout names the difference


def _check_recorded(spec: ProfitSpec, state: ProfitState) -> None:
  """Refuses a state recorded for another cycle (when both are concrete)."""
  for name, recorded, value in (
    ("n_ref", state.cycle_length, spec.cycle_length),
    ("warmup_steps", state.warmup_steps, spec.warmup_steps),
  ):
    if any(_is_tracer(x) for x in (recorded, value)):
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


def _check_storage(spec: ProfitSpec, state: ProfitState, params: optax.Params) -> None:
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


def check_state(spec: ProfitSpec, state: ProfitState, params: optax.Params) -> None:
  """Refuses ``state`` if it was built for another profit than ``spec``'s.

  The storage kind, the delta dtype and the layout are checked at trace time;
  ``n_ref`` and ``warmup_steps`` only when the state's recorded values are
  concrete (not under ``jit``).
  """
  _check_storage(spec, state, params)
  _check_recorded(spec, state)


def profit(
  main: optax.GradientTransformation,
  ref: optax.ScalarOrSchedule | optax.GradientTransformation,
  n_ref: int = 1,
  *,
  warmup_steps: int = 0,
  storage: str | Storage = "delta",
  delta_dtype: Any = None,
) -> ProfitTransformation:
  r"""PROFIT, the proximal fine-tuning optimizer (Algorithm 1 of the paper).

  PROFIT wraps a ``main`` optimizer. Each *cycle* is ``n_ref + 1`` consecutive
  ``update`` calls, each given the gradient of a fresh batch at the current
  params (a normal training loop does this):

  1. calls ``1..n_ref`` are *reference steps*: call 1 saves
     :math:`\theta_{ref} = \theta`; each returns the reference optimizer's
     updates (``optax.sgd(ref)`` for a float or schedule ``ref``);
  2. call ``n_ref + 1`` is the *main step*: with
     :math:`\Delta = \theta - \theta_{ref}` and
     :math:`\omega = \langle \Delta, g \rangle` (one scalar over all leaves,
     accumulated in at least float32), if :math:`\omega < 0` the gradient is
     replaced by :math:`g' = g - \frac{\omega}{\|\Delta\|^2}\Delta`. The main
     optimizer runs on it *at* :math:`\theta_{ref}` (AdamW's weight decay
     acts on the restored weights) and ``update`` returns
     :math:`\theta_{ref} + u_{main} - \theta`: ``optax.apply_updates`` lands
     on :math:`\theta_{ref} + u_{main}`.

  The main optimizer's state advances once per cycle; the reference
  optimizer's state persists across cycles. With ``warmup_steps > 0`` the
  first ``warmup_steps`` calls apply ``main`` alone before the first cycle
  (the paper's recipe for data far from the pre-training data, Sec. 4.3).

  **Schedules.** A schedule inside ``main`` (``optax.adamw(schedule)``) is
  evaluated at the main optimizer's count: it advances once per warm-up step
  and once per cycle, not once per batch (``optax.linear_schedule(1e-2, 0.0,
  48)`` is still at about 0.005 after 48 batches with ``n_ref=1``). For a
  schedule in batches, evaluate it at the batch of main step ``m``:
  ``m`` during the warm-up, then ``warmup_steps + (m - warmup_steps) *
  (n_ref + 1) + n_ref`` (the schedules recipe of the docs). A schedule for
  ``ref`` counts reference steps.

  **Evaluation.** After a reference step the params are temporary: evaluate
  or export :func:`optax_profit.eval_params` (``theta_ref`` inside a cycle,
  the params at a boundary).

  ``update`` is jit-able and vmap-able, with no host round trip: on GPU and
  TPU it computes both steps and selects the phase's results with
  ``jnp.where``; on CPU only the phase's step runs, inside zero-or-one-trip
  loops that update the state in place (chosen at lowering time with
  ``jax.lax.platform_dependent``). It is not reverse-mode differentiable.

  Chain gradient transformations (clipping...) *before* ``profit``: anything
  chained after it also rescales the restore term, and the weights no longer
  land on :math:`\theta_{ref}`.

  Args:
    main: the main optimizer :math:`O`, any ``optax.GradientTransformation``.
    ref: the reference optimizer :math:`O^{(ref)}`: a float learning rate or an
      optax schedule (then ``optax.sgd(ref)``, evaluated at the number of
      *reference* steps taken), or any ``optax.GradientTransformation``. The
      paper finds good ratios ``lr_main / lr_ref`` between 10 and 10,000.
    n_ref: number of reference steps per cycle, an int >= 1 (``n_ref + 1``
      fits an int32). Under ``optax.inject_hyperparams`` keep it static
      (``static_args``) or an int: a traced float is refused.
    warmup_steps: number of leading ``update`` calls that apply ``main``
      alone, an int >= 0.
    storage: ``"delta"`` (default): keep the cycle's displacement, the sum of
      the reference updates taken in at least float32, accurate even where
      reference updates are below the weights' float resolution (float32 and
      float64 params: the displacement, and the reference steps land on
      :math:`\theta_{ref} + \Delta` so that :math:`\theta - \Delta` rounds
      back to :math:`\theta_{ref}`; bfloat16 and float16 params:
      :math:`\theta_{ref}` plus a bfloat16 residual, restored exactly).
      ``"copy"``: keep :math:`\theta_{ref}`, a copy of the weights, and compute
      :math:`\Delta = \theta - \theta_{ref}` (Algorithm 1 literally; quantized
      in that case). Both cost one params copy for float32 params.
    delta_dtype: with ``storage="delta"``, the dtype of the stored
      displacement of float32/float64 leaves (e.g. ``jnp.bfloat16`` or
      ``"bfloat16"`` to halve its memory) and of the residual of
      bfloat16/float16 leaves; ``None``: the leaf's dtype, bfloat16 for the
      residual. It needs float32's exponent range (not float16).

  Returns:
    A :class:`ProfitTransformation` whose state is a :class:`ProfitState`.
    Its ``update`` requires ``params``; extra keyword arguments are passed on
    to ``main`` and ``ref``. Leaves whose gradient is ``None`` (Equinox's
    ``filter_grad`` on non-array leaves; ``params`` may be the whole model)
    get a ``None`` update and are left out of ``delta`` and ``omega``;
    Python-scalar leaves are treated as 0-d arrays, as optax does.

  Raises:
    TypeError: if ``main`` is not a GradientTransformation, ``ref`` has an
      unsupported type, ``n_ref``/``warmup_steps`` are not ints, or
      ``delta_dtype`` is not a floating dtype; from ``init``, naming the
      leaf, if a param is complex.
    ValueError: if ``n_ref < 1``, ``warmup_steps < 0``, either is beyond
      int32, a float ``ref`` is negative or not finite, ``storage`` is
      unknown, ``delta_dtype`` is given with ``storage="copy"`` or lacks
      float32's exponent range, or ``optax.inject_hyperparams`` schedules
      ``ref`` (pass the schedule with ``static_args=("ref",)``), ``n_ref`` or
      ``warmup_steps``; from ``update``, if ``params`` is missing, a gradient
      leaf's shape differs from its param's, or the state was built for
      another ``storage``, ``delta_dtype`` or params layout (checked under
      ``jit`` too) or another ``n_ref``/``warmup_steps`` (checked outside
      ``jit`` only). Hyperparameter values traced under
      ``optax.inject_hyperparams`` cannot be checked.

  References:
    Chakravarthy et al., `PROFIT: A Specialized Optimizer for Deep Fine Tuning
    <https://arxiv.org/abs/2412.01930>`_, NeurIPS 2025.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import optax_profit
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> loss = lambda p, x: jnp.sum((p["w"] - x) ** 2)
    >>> tx = optax_profit.profit(optax.adamw(1e-2), ref=1e-3)
    >>> state = tx.init(params)
    >>> for x in jnp.linspace(0.0, 1.0, 4):  # two cycles of two batches
    ...   grads = jax.grad(loss)(params, x)
    ...   updates, state = tx.update(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> int(state.count)
    4
  """
  _refuse_injected_schedules(sys._getframe(1))  # pylint: disable=protected-access
  if not isinstance(main, optax.GradientTransformation):
    raise TypeError(
      "`main` must be an optax.GradientTransformation (e.g. "
      f"optax.adamw(1e-4)), got {type(main).__name__}."
    )
  spec = ProfitSpec(
    main=optax.with_extra_args_support(main),
    ref=_reference_optimizer(ref),
    n_ref=_as_int("n_ref", n_ref, 1, INT32_MAX - 1),
    warmup_steps=_as_int("warmup_steps", warmup_steps, 0),
    storage=storage_from_args(storage, delta_dtype),
  )

  return _transformation(spec)


def _recorded(spec: ProfitSpec) -> dict[str, jax.Array]:
  """The state's record of the cycle: ``cycle_length`` and ``warmup_steps``."""
  return {
    "cycle_length": jnp.asarray(spec.cycle_length, jnp.int32),
    "warmup_steps": jnp.asarray(spec.warmup_steps, jnp.int32),
  }


def _transformation(
  spec: ProfitSpec, variant: Callable[..., Any] | None = None
) -> ProfitTransformation:
  """The transformation of ``spec``; ``variant`` forces a per-call driver."""

  def init_fn(params: optax.Params) -> ProfitState:
    params = _as_arrays(params)
    acc = _projection.accumulation_dtype(params)
    stored = spec.storage.init(params)
    return ProfitState(
      count=jnp.zeros((), jnp.int32),
      theta_ref=stored if spec.storage.kind == "copy" else None,
      ref_state=spec.ref.init(params),
      main_state=spec.main.init(params),
      **{k: jnp.zeros((), bool if k == "projected" else acc) for k in DIAGNOSTICS},
      delta=stored if spec.storage.kind == "delta" else None,
      **_recorded(spec),
    )

  def update_fn(
    updates: optax.Updates,
    state: ProfitState,
    params: optax.Params | None = None,
    **extra_args: Any,
  ) -> tuple[optax.Updates, ProfitState]:
    if params is None:
      raise ValueError(
        "profit's update needs `params` (the current weights): call "
        "`tx.update(grads, state, params)`."
      )
    updates, params = _as_arrays(updates), _as_arrays(params)
    params = _without_frozen(updates, params)
    _check_layout(updates, params)
    check_state(spec, state, params)
    state = state._replace(**_recorded(spec))
    if not jax.tree.leaves(params):  # e.g. a multi_transform label of no leaf
      return updates, state._replace(count=state.count + 1)
    if variant is not None:
      return variant(spec, updates, state, params, extra_args)
    bind = lambda fn: lambda g, s, p: fn(spec, g, s, p, extra_args)
    return jax.lax.platform_dependent(
      updates, state, params, cpu=bind(_in_place_update), default=bind(_select_update)
    )

  tx = ProfitTransformation(init_fn, update_fn)
  tx.spec = spec
  return tx
