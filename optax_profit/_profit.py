"""PROFIT: a fine-tuning optimizer wrapper (Algorithm 1 of the paper).

A PROFIT *cycle* is ``n_ref + 1`` consecutive calls of ``update``, each with the
gradient of a fresh batch at the current params:

* calls ``1 .. n_ref`` (reference steps): on call 1 save ``theta_ref = params``;
  return the reference optimizer's updates, so params move away from
  ``theta_ref``;
* call ``n_ref + 1`` (main step): ``delta = params - theta_ref``,
  ``omega = <delta, g>``; if ``omega < 0`` replace ``g`` by
  ``g - omega / ||delta||^2 * delta``; run the main optimizer on that gradient
  at ``params = theta_ref`` and return ``(theta_ref - params) + main_updates``,
  so that ``optax.apply_updates`` lands on ``theta_ref`` plus the main step.

With ``delta_dtype`` the state keeps the displacement ``delta`` itself (the sum
of the reference updates, in a narrower dtype) instead of ``theta_ref``, and
the main step restores ``theta_ref = params - delta``.

Two code paths implement the same algorithm:

* ``update`` (one call per batch) selects the phase on device with in-place
  zero-or-one-trip loops (``optax_profit._inplace``) and builds its updates in
  the gradient's buffer;
* :func:`run_cycle` (used by :func:`optax_profit.make_train_step`) runs one
  whole cycle whose phases are known statically: no phase selection at all.
"""

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_profit import _inplace, _projection


class ProfitState(NamedTuple):
  """State of :func:`profit`.

  Attributes:
    count: number of ``update`` calls so far (int32), warm-up included.
    theta_ref: the reference weights saved at the start of the current cycle
      (same structure, shapes, dtypes and shardings as the params); ``None``
      when ``profit(..., delta_dtype=...)`` stores ``delta`` instead. Only
      meaningful inside a cycle (from its first reference step to its main
      step): between cycles it is scratch space, and
      :func:`optax_profit.make_train_step` leaves the last cycle's displaced
      weights there.
    ref_state: state of the reference optimizer. It persists across cycles.
    main_state: state of the main optimizer. It advances once per cycle (and
      once per warm-up step).
    omega: ``<delta, g>`` of the last main step (0 before the first one).
    projected: whether the last main step projected its gradient.
    delta_norm: ``||delta||`` of the last main step.
    delta: with ``delta_dtype``, the displacement ``params - theta_ref`` of
      the current cycle, accumulated from the reference updates and stored in
      ``delta_dtype``; ``None`` otherwise.
  """

  count: jax.Array
  theta_ref: optax.Params | None
  ref_state: optax.OptState
  main_state: optax.OptState
  omega: jax.Array
  projected: jax.Array
  delta_norm: jax.Array
  delta: optax.Updates | None = None


class ProfitSpec(NamedTuple):
  """Static description of a :func:`profit` transformation.

  Read it with :func:`profit_spec`; :func:`optax_profit.make_train_step` uses it
  to size one cycle.

  Attributes:
    n_ref: number of reference steps per cycle.
    warmup_steps: number of leading plain main-optimizer steps.
  """

  n_ref: Any
  warmup_steps: Any


class ProfitTransformation(optax.GradientTransformationExtraArgs):
  """The :class:`optax.GradientTransformationExtraArgs` returned by `profit`.

  A plain ``(init, update)`` pair to optax; it also carries ``spec``, a
  :class:`ProfitSpec`.
  """

  spec: ProfitSpec


def profit_spec(tx: optax.GradientTransformation) -> ProfitSpec | None:
  """Returns the :class:`ProfitSpec` of ``tx`` if it was built by `profit`."""
  return getattr(tx, "spec", None) if isinstance(tx, ProfitTransformation) else None


def _is_tracer(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


def _check_int(name: str, value: Any, minimum: int) -> None:
  """Validates a concrete integer hyperparameter; traced values pass."""
  if _is_tracer(value):
    return  # e.g. under `optax.inject_hyperparams`: checked where concrete.
  if isinstance(value, (bool, np.bool_)):
    raise TypeError(f"`{name}` must be an int, got the bool {value!r}.")
  if isinstance(value, numbers.Integral):
    concrete = int(value)
  elif (
      isinstance(value, (jax.Array, np.ndarray))
      and value.ndim == 0
      and jnp.issubdtype(value.dtype, jnp.integer)
  ):
    concrete = int(value)
  else:
    raise TypeError(
        f"`{name}` must be an int, got {type(value).__name__} {value!r}."
    )
  if concrete < minimum:
    raise ValueError(f"`{name}` must be >= {minimum}, got {concrete}.")


def _reference_optimizer(
    ref: Any,
) -> optax.GradientTransformationExtraArgs:
  """Builds the reference optimizer from the `ref` argument."""
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
  if not _is_tracer(ref):
    value = float(ref)
    if not np.isfinite(value) or value < 0:
      raise ValueError(
          f"`ref` (the reference learning rate) must be finite and >= 0, "
          f"got {value}."
      )
  return optax.sgd(ref)


@dataclasses.dataclass(frozen=True)
class _Parts:
  """What :func:`run_cycle` needs to know about a `profit` transformation."""

  main_tx: optax.GradientTransformationExtraArgs
  ref_tx: optax.GradientTransformationExtraArgs
  n_ref: int
  warmup_steps: int
  delta_dtype: Any


def _delta_dtype(delta_dtype: Any) -> Any:
  """Validates ``delta_dtype``: None or a floating dtype (or its name)."""
  if delta_dtype is None:
    return None
  try:
    dtype = jnp.dtype(delta_dtype)
  except TypeError as e:
    raise TypeError(
        "`delta_dtype` must be None or a floating dtype such as "
        f"jnp.bfloat16 or 'bfloat16', got {delta_dtype!r}."
    ) from e
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"`delta_dtype` must be a floating dtype, got {dtype.name}."
    )
  return dtype


def _same_layout(a: optax.Updates, b: optax.Params) -> bool:
  """Whether two pytrees have the same structure, shapes and dtypes."""
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  return tree_a == tree_b and all(
      jnp.shape(x) == jnp.shape(y) and jnp.result_type(x) == jnp.result_type(y)
      for x, y in zip(leaves_a, leaves_b, strict=True)
  )


def _widened(delta: optax.Updates, dtype: Any, tag: int) -> optax.Updates:
  """``delta`` in ``dtype``, as a separate conversion per ``tag``."""
  return jax.tree.map(
      lambda d: d.astype(dtype), _projection.separate(delta, tag)
  )


def _displacement(
    params: optax.Params, anchor: optax.Params, dtype: Any, tag: int
) -> optax.Updates:
  """``params - anchor`` in ``dtype``, as a separate computation per ``tag``."""
  params, anchor = _projection.separate((params, anchor), tag)
  return jax.tree.map(
      lambda p, t: p.astype(dtype) - t.astype(dtype), params, anchor
  )


def _subtract(
    params: optax.Params, delta: optax.Updates, dtype: Any
) -> optax.Params:
  """``theta_ref = params - delta``, computed in ``dtype``, in the params' dtypes."""
  return jax.tree.map(
      lambda p, d: (p.astype(dtype) - d).astype(p.dtype), params, delta
  )


def profit(
    main: optax.GradientTransformation,
    ref: optax.ScalarOrSchedule | optax.GradientTransformation,
    n_ref: int = 1,
    *,
    warmup_steps: int = 0,
    delta_dtype: Any = None,
) -> ProfitTransformation:
  r"""PROFIT, the proximal fine-tuning optimizer (Algorithm 1 of the paper).

  PROFIT wraps a ``main`` optimizer. Each *cycle* is ``n_ref + 1`` consecutive
  ``update`` calls, each given the gradient of a fresh batch at the current
  params (a normal training loop does this):

  1. calls ``1..n_ref`` are *reference steps*: call 1 saves
     :math:`\theta_{ref} = \theta`; each returns the reference optimizer's
     updates (``optax.sgd(ref)`` for a float or schedule ``ref``), so the
     weights move away from :math:`\theta_{ref}`;
  2. call ``n_ref + 1`` is the *main step*: with
     :math:`\Delta = \theta - \theta_{ref}` and
     :math:`\omega = \langle \Delta, g \rangle` (one scalar over all leaves,
     accumulated in at least float32), if :math:`\omega < 0` the gradient is
     replaced by :math:`g - \frac{\omega}{\|\Delta\|^2}\Delta`. The main
     optimizer runs on it *at* ``params = theta_ref`` (so e.g. AdamW's weight
     decay acts on the restored weights) and ``update`` returns
     :math:`(\theta_{ref} - \theta) + u_{main}`: ``optax.apply_updates`` lands
     on :math:`\theta_{ref} + u_{main}`.

  The main optimizer's state advances once per cycle; the reference
  optimizer's state persists across cycles (SGD is stateless; a stateful
  ``ref`` such as momentum keeps its statistics from cycle to cycle, which is
  the natural reading of Algorithm 1, where :math:`O^{(ref)}` is one object).
  With ``warmup_steps > 0`` the first ``warmup_steps`` calls apply ``main``
  alone (plain fine-tuning, sharing ``main``'s state) before the first cycle:
  the paper's recipe for data far from the pre-training data (Sec. 4.3).

  Phases are selected from the step count on device (no host syncs, no Python
  branching on arrays): everything is jit-able and works under ``vmap``. The
  phase branches update the state in place (a zero-or-one-trip
  ``lax.while_loop``, see ``optax_profit._inplace``), so ``update`` is not
  reverse-mode differentiable.

  ``delta_dtype`` (e.g. ``jnp.bfloat16``) trades exactness for memory: the
  state then holds the cycle's displacement :math:`\Delta` (the sum of the
  reference updates) in that dtype instead of a full-precision copy of
  :math:`\theta_{ref}`; the main step restores :math:`\theta - \Delta` and
  uses :math:`\Delta` for the projection. For float32 params and bfloat16
  ``delta`` this halves PROFIT's extra memory. :math:`\Delta` is small
  next to the weights, so its rounding error (relative ``2**-9`` of
  :math:`\Delta` for bfloat16) barely moves the trajectory, but the weights
  no longer land exactly on :math:`\theta_{ref}` plus the main step (see
  ``benchmarks/RESULTS.md`` for the measured drift).

  Anything chained *after* ``profit`` (e.g. ``optax.chain(profit(...),
  optax.scale(0.5))``) also rescales the restore term
  :math:`\theta_{ref} - \theta`, so the weights no longer land on
  :math:`\theta_{ref}`: chain gradient transformations (clipping, etc.)
  *before* ``profit`` and put schedules inside ``main`` and ``ref``.

  Args:
    main: the main optimizer :math:`O`, any ``optax.GradientTransformation``
      (sgd, adam, adamw, rmsprop, lion, a chain, ...).
    ref: the reference optimizer :math:`O^{(ref)}`: a float learning rate or an
      optax schedule (then ``optax.sgd(ref)``, as the paper recommends), or any
      ``optax.GradientTransformation``. The paper finds good ratios
      ``lr_main / lr_ref`` between 10 and 10,000.
    n_ref: number of reference steps per cycle, an int >= 1.
    warmup_steps: number of leading ``update`` calls that apply ``main`` alone,
      an int >= 0.
    delta_dtype: ``None`` (default: store ``theta_ref`` exactly), or a
      floating dtype or its name (``jnp.bfloat16``, ``"bfloat16"``) in which
      to store the displacement instead. Under ``optax.inject_hyperparams``
      pass the name, or list ``"delta_dtype"`` in ``static_args``.

  Returns:
    A :class:`ProfitTransformation` (an
    :class:`optax.GradientTransformationExtraArgs`) whose state is a
    :class:`ProfitState`. Its ``update`` requires ``params``; extra keyword
    arguments are passed on to ``main`` and ``ref``.

  Raises:
    TypeError: if ``main`` is not a GradientTransformation, ``ref`` has an
      unsupported type, ``n_ref``/``warmup_steps`` are not ints, or
      ``delta_dtype`` is not a floating dtype.
    ValueError: if ``n_ref < 1``, ``warmup_steps < 0`` or a float ``ref`` is
      negative or not finite.

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
  if not isinstance(main, optax.GradientTransformation):
    raise TypeError(
        "`main` must be an optax.GradientTransformation (e.g. "
        f"optax.adamw(1e-4)), got {type(main).__name__}."
    )
  _check_int("n_ref", n_ref, 1)
  _check_int("warmup_steps", warmup_steps, 0)
  delta_dtype = _delta_dtype(delta_dtype)
  main_tx = optax.with_extra_args_support(main)
  ref_tx = _reference_optimizer(ref)
  # Static when given as Python ints (the usual case): branches that can
  # never run are not traced. Traced values (`inject_hyperparams`) work too.
  static_no_warmup = isinstance(warmup_steps, numbers.Integral) and not (
      warmup_steps
  )

  def init_fn(params: optax.Params) -> ProfitState:
    acc_dtype = _projection.accumulation_dtype(params)
    if delta_dtype is None:
      # A copy, not an alias of params: callers donate params and state.
      theta_ref = jax.tree.map(lambda p: jnp.array(p, copy=True), params)
      delta = None
    else:
      theta_ref = None
      delta = jax.tree.map(lambda p: jnp.zeros_like(p, delta_dtype), params)
    return ProfitState(
        count=jnp.zeros((), jnp.int32),
        theta_ref=theta_ref,
        ref_state=ref_tx.init(params),
        main_state=main_tx.init(params),
        omega=jnp.zeros((), acc_dtype),
        projected=jnp.zeros((), bool),
        delta_norm=jnp.zeros((), acc_dtype),
        delta=delta,
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
    grads = updates
    count = state.count
    acc_dtype = state.omega.dtype
    steps_in_cycles = count - jnp.asarray(warmup_steps, jnp.int32)
    in_warmup = steps_in_cycles < 0
    phase = jnp.where(
        in_warmup, -1, steps_in_cycles % (jnp.asarray(n_ref, jnp.int32) + 1)
    )
    is_main = phase == n_ref
    is_ref = (phase >= 0) & ~is_main

    # Exactly one phase branch runs per call. Each reads the gradient from,
    # and writes its updates (in the params' dtypes) into, one shared carry:
    # when the gradient already has the params' dtypes that carry *is* the
    # gradient's buffer, so the updates cost no new buffer and no zero fill.
    if _same_layout(grads, params):
      slot = grads
      read_grads = lambda carried: carried
    else:
      slot = jax.tree.map(jnp.zeros_like, params)
      read_grads = lambda carried: grads

    def reference_updates(carried, ref_state):
      ref_updates, ref_state = ref_tx.update(
          read_grads(carried), ref_state, params, **extra_args
      )
      return optax.tree.cast_like(ref_updates, params), ref_state

    # Reference step: snapshot theta_ref (or reset delta) at the start of a
    # cycle, then O_ref.
    theta_ref, delta = None, None
    if delta_dtype is None:
      theta_ref = _inplace.run_if(
          phase == 0,
          lambda old: optax.tree.cast_like(params, old),
          state.theta_ref,
      )
    slot, ref_state = _inplace.run_if(
        is_ref,
        lambda carry: reference_updates(*carry),
        (slot, state.ref_state),
    )
    if delta_dtype is not None:
      # A second loop reads the reference updates from their buffer (the
      # first one overwrote the gradient with them in place).
      def accumulate(carry):
        ref_updates, delta = carry
        first = phase == 0
        delta = jax.tree.map(
            lambda d, u: jnp.where(
                first, u.astype(acc_dtype), d.astype(acc_dtype) + u
            ).astype(d.dtype),
            delta,
            ref_updates,
        )
        return ref_updates, delta

      slot, delta = _inplace.run_if(is_ref, accumulate, (slot, state.delta))

    # Main step: project, restore theta_ref, step O from theta_ref.
    def main_step(carry):
      carried, main_state, _, _, _ = carry
      if delta_dtype is None:
        anchor = theta_ref
        make_delta = lambda tag: _displacement(
            params, theta_ref, acc_dtype, tag
        )
        restore = lambda tag: _displacement(theta_ref, params, acc_dtype, tag)
      else:
        anchor = _subtract(params, delta, acc_dtype)
        make_delta = lambda tag: _widened(delta, acc_dtype, tag)
        restore = lambda tag: jax.tree.map(
            lambda d: -d, _widened(delta, acc_dtype, tag)
        )
      proj = _projection.project_conflicting_with(
          read_grads(carried), make_delta
      )
      main_updates, new_main_state = main_tx.update(
          proj.updates, main_state, anchor, **extra_args
      )
      restore_and_step = jax.tree.map(
          lambda r, p, u: (r + u.astype(acc_dtype)).astype(p.dtype),
          restore(3),
          params,
          main_updates,
      )
      return (
          restore_and_step,
          optax.tree.cast_like(new_main_state, main_state),
          proj.omega.astype(acc_dtype),
          proj.projected,
          jnp.sqrt(proj.delta_sq_norm).astype(acc_dtype),
      )

    slot, main_state, omega, projected, delta_norm = _inplace.run_if(
        is_main,
        main_step,
        (
            slot,
            state.main_state,
            state.omega,
            state.projected,
            state.delta_norm,
        ),
    )

    if not static_no_warmup:

      def warmup_step(carry):
        carried, main_state = carry
        main_updates, new_main_state = main_tx.update(
            read_grads(carried), main_state, params, **extra_args
        )
        return (
            optax.tree.cast_like(main_updates, params),
            optax.tree.cast_like(new_main_state, main_state),
        )

      slot, main_state = _inplace.run_if(
          in_warmup, warmup_step, (slot, main_state)
      )

    new_state = ProfitState(
        count=count + 1,
        theta_ref=theta_ref,
        ref_state=ref_state,
        main_state=main_state,
        omega=omega,
        projected=projected,
        delta_norm=delta_norm,
        delta=delta,
    )
    return slot, new_state

  tx = ProfitTransformation(init_fn, update_fn)
  tx.spec = ProfitSpec(n_ref=n_ref, warmup_steps=warmup_steps)
  if isinstance(n_ref, numbers.Integral) and isinstance(
      warmup_steps, numbers.Integral
  ):
    tx._parts = _Parts(  # pylint: disable=protected-access
        main_tx, ref_tx, int(n_ref), int(warmup_steps), delta_dtype
    )
  return tx


Values = Any
ValueAndGrad = Callable[[optax.Params, Any], tuple[Values, optax.Updates]]


def cycle_aligned(
    tx: optax.GradientTransformation, state: ProfitState
) -> jax.Array | None:
  """Whether ``state`` is at the start of a cycle, past the warm-up.

  Args:
    tx: a transformation returned by :func:`profit`.
    state: its state.

  Returns:
    A boolean scalar, or ``None`` when ``tx`` has no static cycle (it was not
    built by :func:`profit`, or with traced ``n_ref``/``warmup_steps``).
  """
  parts = getattr(tx, "_parts", None)
  if parts is None or not isinstance(state, ProfitState):
    return None
  steps = state.count - parts.warmup_steps
  return (steps >= 0) & (steps % (parts.n_ref + 1) == 0)


def run_cycle(
    tx: optax.GradientTransformation,
    value_and_grad: ValueAndGrad,
    params: optax.Params,
    state: ProfitState,
    batches: Any,
) -> tuple[optax.Params, ProfitState, Values]:
  """Runs one whole PROFIT cycle of ``n_ref + 1`` batches, phases unrolled.

  Equals ``n_ref + 1`` calls of ``tx.update`` (each followed by
  ``optax.apply_updates``) when ``state`` is at the start of a cycle past the
  warm-up (:func:`cycle_aligned`); the caller must check that. Nothing selects
  a phase: ``lax.scan`` runs the reference steps, then the main step runs once.
  With exact storage, the reference steps move a copy of the weights held in
  ``theta_ref``'s buffer while ``params`` stays the reference, so the snapshot
  costs no copy; the state's ``theta_ref`` is then left holding the displaced
  weights (scratch between cycles).

  Args:
    tx: a transformation returned by :func:`profit` with static ``n_ref`` and
      ``warmup_steps``.
    value_and_grad: ``value_and_grad(params, batch) -> (value, grads)``.
    params: the current params.
    state: ``tx``'s state, at a cycle boundary.
    batches: a pytree whose leaves are stacked with leading size ``n_ref+1``.

  Returns:
    ``(params, state, values)``: the params after the main step, the new state
    and the ``n_ref + 1`` values stacked along a leading axis.
  """
  parts: _Parts = tx._parts  # pylint: disable=protected-access
  main_tx, ref_tx, n_ref = parts.main_tx, parts.ref_tx, parts.n_ref
  acc_dtype = state.omega.dtype
  delta_dtype = parts.delta_dtype

  def batch(i):
    return jax.tree.map(lambda x: x[i], batches)

  def reference_step(carry, i):
    moving, ref_state, delta = carry
    value, grads = value_and_grad(moving, batch(i))
    ref_updates, ref_state = ref_tx.update(grads, ref_state, moving)
    ref_updates = optax.tree.cast_like(ref_updates, moving)
    if delta is not None:
      delta = jax.tree.map(
          lambda d, u: (d.astype(acc_dtype) + u).astype(d.dtype),
          delta,
          ref_updates,
      )
    return (optax.apply_updates(moving, ref_updates), ref_state, delta), value

  if delta_dtype is None:
    delta = None
  else:
    delta = jax.tree.map(jnp.zeros_like, state.delta)
  # With exact storage the moving weights are a new value (XLA places it in
  # theta_ref's dead buffer) and `params` stays theta_ref; with `delta`
  # storage the weights move in place.
  carry = (params, state.ref_state, delta)
  if n_ref == 1:
    carry, value = reference_step(carry, 0)
    ref_values = jax.tree.map(lambda v: jnp.asarray(v)[None], value)
  else:
    carry, ref_values = jax.lax.scan(reference_step, carry, jnp.arange(n_ref))
  moving, ref_state, delta = carry
  main_batch = batch(n_ref)
  value_shape = jax.eval_shape(value_and_grad, moving, main_batch)[0]

  def main_step(carry):
    weights, main_state, *_ = carry
    value, grads = value_and_grad(moving, main_batch)
    if delta_dtype is None:
      anchor = weights  # = params: theta_ref
      make_delta = lambda tag: _displacement(moving, anchor, acc_dtype, tag)
    else:
      anchor = _subtract(weights, delta, acc_dtype)
      make_delta = lambda tag: _widened(delta, acc_dtype, tag)
    proj = _projection.project_conflicting_with(grads, make_delta)
    main_updates, new_main_state = main_tx.update(
        proj.updates, main_state, anchor
    )
    return (
        optax.apply_updates(anchor, main_updates),
        optax.tree.cast_like(new_main_state, main_state),
        proj.omega.astype(acc_dtype),
        proj.projected,
        jnp.sqrt(proj.delta_sq_norm).astype(acc_dtype),
        jax.tree.map(lambda v, s: jnp.asarray(v, s.dtype), value, value_shape),
    )

  carry = (
      params if delta_dtype is None else moving,
      state.main_state,
      state.omega,
      state.projected,
      state.delta_norm,
      jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), value_shape),
  )
  if jax.default_backend() == "cpu":
    # On XLA:CPU the main step runs in its own (always taken) loop body: XLA
    # then cannot merge or hoist parameter-free parts of its forward pass
    # (iotas, padded inputs) into the reference steps' computation, which
    # kept both batches' activations alive at once (+60% temporaries on the
    # CIFAR CNN). On GPU a loop costs a device-to-host sync of its predicate.
    carry = _inplace.run_if(state.count >= 0, main_step, carry)
  else:
    carry = main_step(carry)
  weights, main_state, omega, projected, delta_norm, value = carry
  new_state = ProfitState(
      count=state.count + n_ref + 1,
      theta_ref=moving if delta_dtype is None else None,
      ref_state=ref_state,
      main_state=main_state,
      omega=omega,
      projected=projected,
      delta_norm=delta_norm,
      delta=delta,
  )
  values = jax.tree.map(
      lambda rs, v: jnp.concatenate([rs, jnp.asarray(v)[None]]),
      ref_values,
      value,
  )
  return weights, new_state, values
