"""The fine-tuning methods: one main optimizer (SGD-m or Adam) plain, inside
PROFIT, after L2-SP's gradient, or on the head alone (README.md)."""

import jax
import optax

import optax_profit
from examples.common import baselines

# name -> (trains the backbone, wraps the main optimizer in PROFIT, L2-SP).
METHODS = {
  "head": (False, False, False),
  "head_profit": (False, True, False),
  "full": (True, False, False),
  "full_profit": (True, True, False),
  "l2sp": (True, False, True),
}


def _head_only(params):
  return {
    "backbone": jax.tree.map(lambda _: "frozen", params["backbone"]),
    "head": jax.tree.map(lambda _: "trainable", params["head"]),
  }


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
  """The optimizer of ``method``, for train steps of ``cycle_length = n_ref + 1``.

  ``lr``, ``lr / ratio`` and ``alpha`` live in its state (``inject_hyperparams``):
  a train step built for one value runs any other unchanged.
  """
  if method not in METHODS:
    raise ValueError(f"`method` must be one of {tuple(METHODS)}, got {method!r}.")
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
      {"trainable": tx, "frozen": optax.set_to_zero()}, _head_only
    )
  return tx
