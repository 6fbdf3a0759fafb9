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
"""

import numbers
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
      (same structure, shapes, dtypes and shardings as the params).
    ref_state: state of the reference optimizer. It persists across cycles.
    main_state: state of the main optimizer. It advances once per cycle (and
      once per warm-up step).
    omega: ``<delta, g>`` of the last main step (0 before the first one).
    projected: whether the last main step projected its gradient.
    delta_norm: ``||delta||`` of the last main step.
  """

  count: jax.Array
  theta_ref: optax.Params
  ref_state: optax.OptState
  main_state: optax.OptState
  omega: jax.Array
  projected: jax.Array
  delta_norm: jax.Array


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


def profit(
    main: optax.GradientTransformation,
    ref: optax.ScalarOrSchedule | optax.GradientTransformation,
    n_ref: int = 1,
    *,
    warmup_steps: int = 0,
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

  Returns:
    A :class:`ProfitTransformation` (an
    :class:`optax.GradientTransformationExtraArgs`) whose state is a
    :class:`ProfitState`. Its ``update`` requires ``params``; extra keyword
    arguments are passed on to ``main`` and ``ref``.

  Raises:
    TypeError: if ``main`` is not a GradientTransformation, ``ref`` has an
      unsupported type, or ``n_ref``/``warmup_steps`` are not ints.
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
  main_tx = optax.with_extra_args_support(main)
  ref_tx = _reference_optimizer(ref)
  # Static when given as Python ints (the usual case): branches that can
  # never run are not traced. Traced values (`inject_hyperparams`) work too.
  static_no_warmup = isinstance(warmup_steps, numbers.Integral) and not (
      warmup_steps
  )

  def init_fn(params: optax.Params) -> ProfitState:
    acc_dtype = _projection.accumulation_dtype(params)
    return ProfitState(
        count=jnp.zeros((), jnp.int32),
        # A copy, not an alias of params: callers donate params and state.
        theta_ref=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
        ref_state=ref_tx.init(params),
        main_state=main_tx.init(params),
        omega=jnp.zeros((), acc_dtype),
        projected=jnp.zeros((), bool),
        delta_norm=jnp.zeros((), acc_dtype),
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

    # Updates leave in the params' dtypes (bf16 params, bf16 updates).
    zero_updates = jax.tree.map(jnp.zeros_like, params)

    # Reference step: snapshot theta_ref at the start of a cycle, then O_ref.
    theta_ref = _inplace.run_if(
        phase == 0,
        lambda old: optax.tree.cast_like(params, old),
        state.theta_ref,
    )

    def reference_step(carry):
      _, ref_state = carry
      ref_updates, ref_state = ref_tx.update(
          grads, ref_state, params, **extra_args
      )
      return optax.tree.cast_like(ref_updates, params), ref_state

    new_updates, ref_state = _inplace.run_if(
        is_ref, reference_step, (zero_updates, state.ref_state)
    )

    # Main step: project, restore theta_ref, step O from theta_ref.
    def main_step(carry):
      _new_updates, main_state, _, _, _ = carry
      delta = jax.tree.map(
          lambda p, t: p.astype(acc_dtype) - t.astype(acc_dtype),
          params,
          theta_ref,
      )
      proj = _projection.project_conflicting(grads, delta)
      main_updates, new_main_state = main_tx.update(
          proj.updates, main_state, theta_ref, **extra_args
      )
      restore_and_step = jax.tree.map(
          lambda t, p, u: (
              t.astype(acc_dtype) - p.astype(acc_dtype) + u.astype(acc_dtype)
          ).astype(p.dtype),
          theta_ref,
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

    new_updates, main_state, omega, projected, delta_norm = _inplace.run_if(
        is_main,
        main_step,
        (
            new_updates,
            state.main_state,
            state.omega,
            state.projected,
            state.delta_norm,
        ),
    )

    if not static_no_warmup:

      def warmup_step(carry):
        _, main_state = carry
        main_updates, new_main_state = main_tx.update(
            grads, main_state, params, **extra_args
        )
        return (
            optax.tree.cast_like(main_updates, params),
            optax.tree.cast_like(new_main_state, main_state),
        )

      new_updates, main_state = _inplace.run_if(
          in_warmup, warmup_step, (new_updates, main_state)
      )

    new_state = ProfitState(
        count=count + 1,
        theta_ref=theta_ref,
        ref_state=ref_state,
        main_state=main_state,
        omega=omega,
        projected=projected,
        delta_norm=delta_norm,
    )
    return new_updates, new_state

  tx = ProfitTransformation(init_fn, update_fn)
  tx.spec = ProfitSpec(n_ref=n_ref, warmup_steps=warmup_steps)
  return tx
