"""PROFIT: a fine-tuning optimizer wrapper (Algorithm 1 of the paper).

Algorithm 1 is written once, as :func:`reference_step` (lines 6-9) and
:func:`main_step` (lines 12-19). Two drivers call them: the per-call
``update`` of :func:`profit` (one call per batch, what ``optax.chain``, Flax
``TrainState`` and ``nnx.Optimizer`` use) and the static cycle of
:func:`optax_profit.make_train_step`. How XLA:CPU runs them in place is
``_xla_cpu``'s; the argument checks are ``_validation``'s.
"""

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_profit import _projection, _types, _validation, _xla_cpu
from optax_profit._projection import Diagnostics
from optax_profit._storage import Storage, _where, storage_from_args
from optax_profit._types import (
  Phase,
  ProfitSpec,
  ProfitState,
  ProfitTransformation,
  transformation,
)


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

  delta = spec.storage.displacement(stored, params)  # line 12
  proj = _projection.project_if(grads, delta, in_cycle)  # lines 13-17
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


# ------------------------------------------------------ per-call drivers
def diagnostics_like(proj: _projection.Projection, state: ProfitState) -> Diagnostics:
  """The diagnostics of ``proj`` in the dtypes of ``state``'s."""
  return jax.tree.map(
    lambda x, y: x.astype(y.dtype), proj.diagnostics, state.diagnostics
  )


class Steps(NamedTuple):
  """Algorithm 1 bound to one ``update`` call: what a per-call driver runs."""

  phase: Phase
  field: str  # the state field of the storage
  reference: Callable[..., Any]  # (grads, ref_state) -> (updates, ref_state): line 9
  record: Callable[..., Any]  # (stored, updates) -> (stored, updates): line 6
  main: Callable[..., Any]  # lines 12-19, and the diagnostics (see `_bind`)


def _bind(spec: ProfitSpec, state: ProfitState, params, extra_args) -> Steps:
  """Algorithm 1 for call number ``state.count`` at ``params``."""
  phase = _types.phase(spec, state.count)

  def main(grads, stored, main_state):
    updates, main_state, proj = main_step(
      spec, grads, params, stored, main_state, extra_args, phase.in_cycle
    )
    return updates, main_state, diagnostics_like(proj, state)

  return Steps(
    phase=phase,
    field=spec.storage.field,
    reference=lambda g, s: reference_step(spec, g, params, s, extra_args),
    record=lambda stored, u: spec.storage.record(stored, params, u, phase.first),
    main=main,
  )


def _pick(pred: Any, a: Any, b: Any) -> Any:
  return jax.tree.map(lambda x, y: _where(pred, x, y), a, b)


def select_update(steps: Steps, grads, state: ProfitState, params):
  """Both steps computed, the phase's results selected: no control flow.

  XLA:GPU copies the predicate of every ``while`` and ``conditional`` to the
  host and waits for it; selecting with ``jnp.where`` keeps the call on
  device (as ``optax.MultiSteps`` does).
  """
  del params  # bound in `steps`
  is_ref = steps.phase.is_ref
  stored = getattr(state, steps.field)
  ref_updates, ref_state = steps.reference(grads, state.ref_state)
  ref_stored, ref_updates = steps.record(stored, ref_updates)
  main_updates, main_state, diagnostics = steps.main(grads, stored, state.main_state)
  state = state._replace(
    count=state.count + 1,
    ref_state=_pick(is_ref, ref_state, state.ref_state),
    main_state=_pick(is_ref, state.main_state, main_state),
    **{steps.field: _pick(is_ref, ref_stored, stored)},
    diagnostics=_pick(is_ref, state.diagnostics, diagnostics),
  )
  return _pick(is_ref, ref_updates, main_updates), state


# The per-call drivers, ``driver(steps, grads, state, params) -> (updates,
# state)``; `profit` picks one per platform when it is lowered, tests and
# benchmarks force one with `with_driver`.
DRIVERS: dict[str, Callable[..., Any]] = {
  "select": select_update,  # GPU, TPU
  "in-place": _xla_cpu.in_place_update,  # CPU
}


def with_driver(tx: ProfitTransformation, driver: str | Callable[..., Any]):
  """``tx`` with its per-call driver forced (a name of ``DRIVERS`` or one)."""
  return _transformation(tx.spec, DRIVERS.get(driver, driver))


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
  _validation.refuse_injected_schedules(sys._getframe(1))  # pylint: disable=protected-access
  if not isinstance(main, optax.GradientTransformation):
    raise TypeError(
      "`main` must be an optax.GradientTransformation (e.g. "
      f"optax.adamw(1e-4)), got {type(main).__name__}."
    )
  spec = ProfitSpec(
    main=optax.with_extra_args_support(main),
    ref=_validation.reference_optimizer(ref),
    n_ref=_validation.as_int("n_ref", n_ref, 1, _validation.INT32_MAX - 1),
    warmup_steps=_validation.as_int("warmup_steps", warmup_steps, 0),
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
  spec: ProfitSpec, driver: Callable[..., Any] | None = None
) -> ProfitTransformation:
  """The transformation of ``spec``; ``driver``: the platform's when None."""

  def init_fn(params: optax.Params) -> ProfitState:
    params = _validation.as_arrays(params)
    acc = _projection.accumulation_dtype(params)
    stored = spec.storage.init(params)
    return ProfitState(
      count=jnp.zeros((), jnp.int32),
      theta_ref=stored if spec.storage.kind == "copy" else None,
      ref_state=spec.ref.init(params),
      main_state=spec.main.init(params),
      diagnostics=Diagnostics(
        *(jnp.zeros((), acc) for _ in range(4)), projected=jnp.zeros((), bool)
      ),
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
    updates, params = _validation.as_arrays(updates), _validation.as_arrays(params)
    params = _validation.without_frozen(updates, params)
    _validation.check_layout(updates, params)
    _validation.check_state(spec, state, params)
    state = state._replace(**_recorded(spec))
    if not jax.tree.leaves(params):  # e.g. a multi_transform label of no leaf
      return updates, state._replace(count=state.count + 1)
    run = lambda drive: lambda g, s, p: drive(_bind(spec, s, p, extra_args), g, s, p)
    if driver is not None:
      return run(driver)(updates, state, params)
    return jax.lax.platform_dependent(
      updates,
      state,
      params,
      cpu=run(_xla_cpu.in_place_update),
      default=run(select_update),
    )

  return transformation(init_fn, update_fn, spec)
