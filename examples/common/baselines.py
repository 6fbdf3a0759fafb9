"""Forgetting remedies that need no old data: L2-SP, LP-FT and WiSE-FT.

One implementation each, shared by every example:

* **L2-SP** (Li et al., 2018, arXiv 1802.01483): fine-tune on the new-task
  loss plus ``alpha / 2 * ||theta - theta_pre||^2`` over the backbone (a new
  head has no pre-trained value). :func:`l2sp_penalty` is the term;
  :func:`l2sp` adds its gradient, ``alpha * (theta - theta_pre)``, to the
  loss gradient before the optimizer, with the anchor ``theta_pre`` taken at
  ``init`` and kept in the state (a resumed run keeps it), and ``alpha`` in
  the state too (one compiled step serves every strength).
* **LP-FT** (Kumar et al., 2022, arXiv 2202.10054): fit the new head alone
  first, then fine-tune everything. :func:`switch` runs one transformation
  for the first ``steps`` updates and a second, fresh one afterwards.
* **WiSE-FT** (Wortsman et al., 2022, arXiv 2109.01903): evaluate
  ``(1 - a) * theta_pre + a * theta_ft`` for ``a`` in [0, 1]; see
  :func:`interpolate`.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Params = Any


def l2sp_penalty(
  params: Params, anchor: Params, alpha: jax.typing.ArrayLike
) -> jax.Array:
  """``alpha / 2 * ||params - anchor||^2``, summed over every leaf in float32.

  Args:
    params: the penalised params (pass the backbone alone for L2-SP).
    anchor: the pre-trained params (same structure).
    alpha: the strength (a Python number or a traced scalar).

  Returns:
    The penalty, a scalar.
  """
  squares = jax.tree.map(
    lambda p, a: jnp.sum(jnp.square(p.astype(jnp.float32) - a.astype(jnp.float32))),
    params,
    anchor,
  )
  return 0.5 * alpha * sum(jax.tree.leaves(squares))


class L2SPState(NamedTuple):
  """The state of :func:`l2sp`.

  Attributes:
    anchor: the anchored params at ``init``.
    alpha: the strength, a float32 scalar (state, not a compile-time
      constant, so one compiled train step serves every strength).
  """

  anchor: Params
  alpha: jax.Array


def l2sp(alpha: float, key: str | None = None) -> optax.GradientTransformation:
  """Adds the gradient of :func:`l2sp_penalty` towards the params at ``init``.

  ``optax.chain(l2sp(alpha, "backbone"), main)`` is ``main`` on ``loss +
  alpha / 2 * ||params["backbone"] - anchor||^2``; the other entries of the
  params (the new head) are pulled nowhere.

  Args:
    alpha: the strength, >= 0.
    key: the entry of the params dict that is anchored; None anchors every
      parameter.

  Returns:
    A transformation whose ``update`` needs ``params``.

  Raises:
    ValueError: naming ``alpha`` if it is negative; naming ``params`` if
      ``update`` gets none.
  """
  if alpha < 0:
    raise ValueError(f"`alpha` must be >= 0, got {alpha}.")
  part = (lambda tree: tree) if key is None else (lambda tree: tree[key])

  def init_fn(params: Params) -> L2SPState:
    return L2SPState(
      anchor=jax.tree.map(jnp.copy, part(params)),
      alpha=jnp.asarray(alpha, jnp.float32),
    )

  def update_fn(updates: Params, state: L2SPState, params: Params | None = None):
    if params is None:
      raise ValueError("`l2sp` needs `params` in `update`.")
    pulled = jax.tree.map(
      lambda u, p, a: u + (state.alpha * (p - a)).astype(u.dtype),
      part(updates),
      part(params),
      state.anchor,
    )
    return (pulled if key is None else {**updates, key: pulled}), state

  return optax.GradientTransformation(init_fn, update_fn)


class SwitchState(NamedTuple):
  """State of :func:`switch`: updates so far and both inner states."""

  count: jax.Array
  first: optax.OptState
  second: optax.OptState


def switch(
  first: optax.GradientTransformation,
  second: optax.GradientTransformation,
  steps: int,
) -> optax.GradientTransformation:
  """``first`` for the first ``steps`` updates, then ``second`` from its init state.

  Both are evaluated at every update and one result is selected with
  ``jnp.where`` (no control flow, so it runs inside ``lax.scan``); the idle
  one's state is not advanced, so ``second`` starts fresh at update
  ``steps`` (LP-FT's fine-tuning phase starts a new optimizer).

  Args:
    first: the transformation of the first phase (LP: the head alone).
    second: the transformation afterwards (FT: every parameter).
    steps: updates of the first phase, >= 0.

  Returns:
    The switching transformation.

  Raises:
    ValueError: naming ``steps`` if it is negative.
  """
  if steps < 0:
    raise ValueError(f"`steps` must be >= 0, got {steps}.")

  def init_fn(params: Params) -> SwitchState:
    return SwitchState(
      jnp.zeros([], jnp.int32), first.init(params), second.init(params)
    )

  def update_fn(updates: Params, state: SwitchState, params: Params | None = None):
    in_first = state.count < steps
    pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(in_first, x, y), a, b)
    first_updates, first_state = first.update(updates, state.first, params)
    second_updates, second_state = second.update(updates, state.second, params)
    return pick(first_updates, second_updates), SwitchState(
      state.count + 1,
      pick(first_state, state.first),
      pick(state.second, second_state),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def interpolate(pretrained: Params, finetuned: Params, a: float) -> Params:
  """WiSE-FT weights ``(1 - a) * pretrained + a * finetuned``, leaf by leaf.

  Computed in float32 and returned in the leaves' dtypes. The end points are
  copies of the end points themselves (``a = 0``: the pre-trained arrays,
  ``a = 1``: the fine-tuned ones), so they are bit-identical to the weights
  they stand for (the formula would turn ``-0.0`` into ``0.0``), and a caller
  may donate them.

  Args:
    pretrained: the pre-trained params.
    finetuned: the fine-tuned params (same structure).
    a: the mixing coefficient in [0, 1].

  Returns:
    The interpolated params.

  Raises:
    ValueError: naming ``a`` if it is outside [0, 1].
  """
  a = float(a)
  if not 0.0 <= a <= 1.0:
    raise ValueError(f"`a` must be in [0, 1], got {a}.")
  if a == 0.0:
    return jax.tree.map(jnp.copy, pretrained)
  if a == 1.0:
    return jax.tree.map(jnp.copy, finetuned)
  return jax.tree.map(
    lambda p, f: ((1.0 - a) * p.astype(jnp.float32) + a * f.astype(jnp.float32)).astype(
      p.dtype
    ),
    pretrained,
    finetuned,
  )
