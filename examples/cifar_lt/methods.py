"""The fine-tuning methods: plain, PROFIT, L2-SP, WiSE-FT, and head only.

Every method trains the model params ``{"backbone", "head"}`` with one main
optimizer (``optax.sgd(lr, momentum)`` or ``optax.adam(lr)``):

* plain: the main optimizer;
* PROFIT: ``optax_profit.profit(main, ref=optax.sgd(lr / ratio),
  n_ref=n_ref)``;
* L2-SP (Li et al., 2018, arXiv 1802.01483): the main optimizer on the loss
  plus ``alpha / 2 * ||backbone - backbone_pre||^2`` (backbone only, not the
  head), added as the penalty's gradient ``alpha * (backbone -
  backbone_pre)`` by ``examples.common.baselines.l2sp`` before the main
  optimizer, with the anchor taken at ``init``;
* head only: any of the above on the head, the backbone frozen with
  ``optax.multi_transform`` (so PROFIT's displacement and projection see the
  head alone);
* WiSE-FT (Wortsman et al., 2022, arXiv 2109.01903): no training of its own;
  ``examples.common.baselines.interpolate`` mixes the pre-trained and a run's
  fine-tuned weights.
"""

from typing import Any

import jax
import optax

import optax_profit
from examples.common import baselines

Params = Any

# name -> (trains the backbone, wraps the main optimizer in PROFIT, L2-SP).
METHODS = {
  "head": (False, False, False),
  "head_profit": (False, True, False),
  "full": (True, False, False),
  "full_profit": (True, True, False),
  "l2sp": (True, False, True),
}


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
    tx = optax.chain(baselines.l2sp(alpha, "backbone"), tx)
  if not full:
    tx = optax.multi_transform(
      {"trainable": tx, "frozen": optax.set_to_zero()}, _labels("trainable", "frozen")
    )
  return tx
