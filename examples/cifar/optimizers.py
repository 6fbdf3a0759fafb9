"""The fine-tuning optimizers of Table 2 (SGD, Adam, Lookahead, Adan, PROFIT).

They see the backbone and the new head only (``head_only``: the head alone).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import optax_profit
from examples.cifar.configs import default
from examples.common import baselines

Params = Any


class Optimizer(NamedTuple):
  """An optimizer, ``wrap`` (params -> a copy it updates) and the loss/eval views."""

  tx: optax.GradientTransformation
  wrap: Callable[[Params], Params]
  loss_view: Callable[[Params], Params]
  eval_view: Callable[[Params, optax.OptState], Params]


def _copy(tree: Params) -> Params:
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def lookahead_on_pairs(fast_optimizer, sync_period: int, slow_step_size: float):
  """``optax.lookahead`` given ``LookaheadParams(fast=g, slow=0)`` gradients."""
  inner = optax.lookahead(
    fast_optimizer, sync_period=sync_period, slow_step_size=slow_step_size
  )

  def update_fn(updates, state, params=None):
    return inner.update(updates.fast, state, params)

  return optax.GradientTransformation(inner.init, update_fn)


def head_only_labels(params: Params) -> Params:
  """``multi_transform`` labels: ``"frozen"`` backbone, ``"trainable"`` head."""
  return {
    "backbone": jax.tree.map(lambda _: "frozen", params["backbone"]),
    "head": jax.tree.map(lambda _: "trainable", params["head"]),
  }


def _head_only(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  return optax.multi_transform(
    {"trainable": tx, "frozen": optax.set_to_zero()}, head_only_labels
  )


def create_optimizer(name: str, lr: float, config, *, steps_per_epoch: int):
  """The optimizer ``name`` at ``lr``, with LP-FT's head-only phase and L2-SP's pull.

  ``steps_per_epoch`` (``update`` calls) times PROFIT's warm-up and LP-FT.
  """
  if name not in default.OPTIMIZERS:
    raise ValueError(f"`optimizer` must be one of {default.OPTIMIZERS}, got {name!r}.")
  if name == "sgd":
    tx = optax.sgd(lr, momentum=config.sgd_momentum or None)
  elif name in ("adam", "lookahead"):
    tx = optax.adam(lr)
  elif name == "adan":
    tx = optax.adan(lr)
  else:
    tx = optax_profit.profit(
      optax.adam(lr),
      ref=lr / config.ratio,
      n_ref=config.n_ref,
      warmup_steps=config.warmup_epochs * steps_per_epoch,
    )
  if config.head_only:
    tx = _head_only(tx)
  if config.lp_epochs:
    if name in ("profit", "lookahead"):
      raise ValueError(f"`lp_epochs` (LP-FT) supports sgd, adam, adan; got {name!r}.")
    linear_probe = _head_only(optax.adam(config.lp_lr))
    tx = baselines.switch(linear_probe, tx, config.lp_epochs * steps_per_epoch)
  if config.l2sp_alpha:
    if name == "lookahead":
      raise ValueError("`l2sp_alpha` (L2-SP) does not support lookahead.")
    tx = optax.chain(baselines.l2sp(config.l2sp_alpha, "backbone"), tx)
  if name == "lookahead":
    return Optimizer(
      tx=lookahead_on_pairs(tx, config.lookahead_k, config.lookahead_alpha),
      wrap=lambda p: optax.LookaheadParams(fast=_copy(p), slow=_copy(p)),
      loss_view=lambda p: p.fast,
      eval_view=lambda p, _: p.slow,
    )
  eval_view = optax_profit.eval_params if name == "profit" else lambda p, _: p
  return Optimizer(tx=tx, wrap=_copy, loss_view=lambda p: p, eval_view=eval_view)
