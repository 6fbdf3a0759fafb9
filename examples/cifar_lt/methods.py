"""The fine-tuning methods: plain, PROFIT, L2-SP, WiSE-FT, and head only.

Every method trains the model params ``{"backbone", "head"}`` with one main
optimizer (``optax.sgd(lr, momentum)`` or ``optax.adam(lr)``):

* plain: the main optimizer;
* PROFIT: ``optax_profit.profit(main, ref=optax.sgd(lr / ratio),
  n_ref=n_ref)``;
* L2-SP (Li et al., 2018, arXiv 1802.01483): the main optimizer on the loss
  plus ``alpha / 2 * ||backbone - backbone_pre||^2`` (backbone only, not the
  head), added as the penalty's gradient ``alpha * (backbone -
  backbone_pre)`` by :func:`l2_sp` before the main optimizer, with the anchor
  taken at ``init``;
* head only: any of the above on the head, the backbone frozen with
  ``optax.multi_transform`` (so PROFIT's displacement and projection see the
  head alone);
* WiSE-FT (Wortsman et al., 2022, arXiv 2109.01903): no training of its own;
  :func:`wise_ft` interpolates the pre-trained and a run's fine-tuned weights.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import optax_profit

Params = Any

# name -> (trains the backbone, wraps the main optimizer in PROFIT, L2-SP).
METHODS = {
  "head": (False, False, False),
  "head_profit": (False, True, False),
  "full": (True, False, False),
  "full_profit": (True, True, False),
  "l2sp": (True, False, True),
}


def l2_sp_penalty(params: Params, anchor: Params, alpha: float) -> jax.Array:
  """``alpha / 2 * ||params - anchor||^2`` over every leaf, in float32.

  Args:
    params: the current weights (pass the backbone only for L2-SP).
    anchor: the pre-trained weights, same structure.
    alpha: the strength.

  Returns:
    The scalar penalty.
  """
  squares = jax.tree.map(
    lambda p, a: jnp.sum(jnp.square(p.astype(jnp.float32) - a.astype(jnp.float32))),
    params,
    anchor,
  )
  return 0.5 * alpha * sum(jax.tree.leaves(squares))


class L2SPState(NamedTuple):
  """The state of :func:`l2_sp`.

  Attributes:
    anchor: the params at ``init``.
    alpha: the strength, a float32 scalar (state, not a compile-time
      constant, so one compiled train step serves every strength).
  """

  anchor: Params
  alpha: jax.Array


def l2_sp(alpha: float) -> optax.GradientTransformation:
  """Adds the gradient of :func:`l2_sp_penalty` towards the params at ``init``.

  ``optax.chain(l2_sp(alpha), main)`` is ``main`` on ``loss + alpha / 2 *
  ||params - params_init||^2``. Use it inside ``optax.masked`` (or
  ``multi_transform``) to restrict it to the backbone.

  Args:
    alpha: the strength, ``>= 0``.

  Returns:
    The transformation; ``update`` needs ``params``.

  Raises:
    ValueError: naming ``alpha`` if it is negative; naming ``params`` if
      ``update`` gets none.
  """
  if alpha < 0:
    raise ValueError(f"`alpha` must be >= 0, got {alpha}.")

  def init_fn(params: Params) -> L2SPState:
    return L2SPState(
      anchor=jax.tree.map(jnp.copy, params), alpha=jnp.asarray(alpha, jnp.float32)
    )

  def update_fn(updates: Params, state: L2SPState, params: Params | None = None):
    if params is None:
      raise ValueError("`params` is required by l2_sp's update.")
    updates = jax.tree.map(
      lambda g, p, a: g + (state.alpha * (p - a)).astype(g.dtype),
      updates,
      params,
      state.anchor,
    )
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def _labels(trainable: str, frozen: str):
  def labels(params: Params) -> Params:
    return {
      "backbone": jax.tree.map(lambda _: frozen, params["backbone"]),
      "head": jax.tree.map(lambda _: trainable, params["head"]),
    }

  return labels


def create_optimizer(
  method: str,
  lr: float,
  *,
  main_optimizer: str = "sgd",
  momentum: float = 0.9,
  n_ref: int = 1,
  ratio: float = 10.0,
  alpha: float = 0.0,
) -> optax.GradientTransformation:
  """The optimizer of ``method`` on ``{"backbone", "head"}`` params.

  Args:
    method: one of :data:`METHODS`.
    lr: the main optimizer's learning rate.
    main_optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
    momentum: SGD's momentum (0: none).
    n_ref: PROFIT's reference steps per cycle.
    ratio: PROFIT's ``lr / ref``.
    alpha: L2-SP's strength (``l2sp`` only).

  Returns:
    The transformation; drive it with ``make_train_step(...,
    cycle_length=n_ref + 1)`` for every method, so all see the same batches.
    ``lr``, ``lr / ratio`` and ``alpha`` are held in its state: a train step
    built for one value runs any other (same structure) unchanged.

  Raises:
    ValueError: naming ``method`` or ``main_optimizer`` if unknown.
  """
  if method not in METHODS:
    raise ValueError(f"`method` must be one of {tuple(METHODS)}, got {method!r}.")
  # Learning rates live in the optimizer state (inject_hyperparams), not in
  # the compiled code: one compiled train step serves a whole lr grid.
  if main_optimizer == "sgd":
    sgd = optax.inject_hyperparams(optax.sgd, static_args=("momentum", "nesterov"))
    tx = sgd(learning_rate=lr, momentum=momentum or None)
  elif main_optimizer == "adam":
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
  else:
    raise ValueError(
      f"`main_optimizer` must be 'sgd' or 'adam', got {main_optimizer!r}."
    )
  full, profit, l2sp = METHODS[method]
  if profit:
    ref = optax.inject_hyperparams(optax.sgd)(learning_rate=lr / ratio)
    tx = optax_profit.profit(tx, ref=ref, n_ref=n_ref)
  if l2sp:
    penalty = optax.multi_transform(
      {"backbone": l2_sp(alpha), "head": optax.identity()},
      _labels("head", "backbone"),
    )
    tx = optax.chain(penalty, tx)
  if not full:
    tx = optax.multi_transform(
      {"trainable": tx, "frozen": optax.set_to_zero()}, _labels("trainable", "frozen")
    )
  return tx


def wise_ft(pretrained: Params, finetuned: Params, a: float) -> Params:
  """WiSE-FT: ``(1 - a) * pretrained + a * finetuned``, leaf by leaf.

  Args:
    pretrained: the weights before fine-tuning.
    finetuned: the weights after, same structure.
    a: the mixing coefficient in ``[0, 1]``; 0 returns ``pretrained`` and 1
      returns ``finetuned`` exactly (not a rounded mixture).

  Returns:
    The interpolated weights (computed in float32, in the leaves' dtypes).

  Raises:
    ValueError: naming ``a`` if it is outside ``[0, 1]``.
  """
  if not 0.0 <= a <= 1.0:
    raise ValueError(f"`a` must be in [0, 1], got {a}.")
  if a == 0.0:
    return pretrained
  if a == 1.0:
    return finetuned
  return jax.tree.map(
    lambda p, f: ((1.0 - a) * p.astype(jnp.float32) + a * f.astype(jnp.float32)).astype(
      p.dtype
    ),
    pretrained,
    finetuned,
  )
