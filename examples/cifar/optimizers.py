"""The fine-tuning optimizers of Table 2: SGD, Adam, Lookahead, Adan, PROFIT.

Every optimizer is built for the *trainable* parameters only (backbone and the
new CIFAR-100 head; the CIFAR-10 head never reaches it). With ``head_only`` the
backbone is masked out with ``optax.multi_transform``: its updates are zero
and PROFIT's ``theta_ref``/projection see the head alone.
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
  """A fine-tuning optimizer and the view of the parameters it works on.

  Attributes:
    tx: the optax transformation.
    wrap: model params -> the params ``tx`` updates (``optax.LookaheadParams``
      for Lookahead, a copy of the params otherwise: the train step donates
      them).
    loss_view: ``tx``'s params -> the model params the loss is taken at
      (Lookahead's fast weights).
    eval_view: ``(tx's params, tx's state)`` -> the model params to evaluate
      (Lookahead's slow weights; PROFIT's ``optax_profit.eval_params``:
      ``theta_ref`` when a call ends mid-cycle).
  """

  tx: optax.GradientTransformation
  wrap: Callable[[Params], Params]
  loss_view: Callable[[Params], Params]
  eval_view: Callable[[Params, optax.OptState], Params]


def _copy(tree: Params) -> Params:
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def _identity(tree: Params) -> Params:
  return tree


def lookahead_on_pairs(
  fast_optimizer: optax.GradientTransformation,
  sync_period: int,
  slow_step_size: float,
) -> optax.GradientTransformation:
  """``optax.lookahead`` whose gradients come as ``LookaheadParams``.

  ``optax.lookahead``'s ``update`` wants the gradient of the *fast* params and
  ``params`` as ``optax.LookaheadParams(fast, slow)``. A generic train step
  (``optax_profit.make_train_step``) differentiates the loss with respect to
  the whole params pytree, which yields ``LookaheadParams(fast=g, slow=0)``;
  this wrapper passes ``g`` on.

  Args:
    fast_optimizer: the inner optimizer.
    sync_period: Lookahead's ``k``.
    slow_step_size: Lookahead's ``alpha``.

  Returns:
    A transformation on ``optax.LookaheadParams``.
  """
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


def create_optimizer(
  name: str,
  lr: float,
  config: default.Config,
  *,
  steps_per_epoch: int,
) -> Optimizer:
  """The fine-tuning optimizer ``name`` at learning rate ``lr``.

  * ``sgd``: ``optax.sgd(lr, momentum=config.sgd_momentum)``.
  * ``adam``: ``optax.adam(lr)``.
  * ``lookahead``: ``optax.lookahead(optax.adam(lr), k, alpha)`` (paper: k 1,
    alpha 0.5).
  * ``adan``: ``optax.adan(lr)`` (optax's default betas).
  * ``profit``: ``optax_profit.profit(optax.adam(lr), ref=lr / ratio,
    n_ref=n_ref, warmup_steps=warmup_epochs * steps_per_epoch)``.

  With ``config.lp_epochs`` (LP-FT), the head alone is first trained with
  ``optax.adam(lp_lr)`` for ``lp_epochs * steps_per_epoch`` updates, then the
  optimizer above starts fresh on every parameter (:func:`baselines.switch`).
  With ``config.l2sp_alpha`` (L2-SP), :func:`baselines.l2sp` comes first in
  the chain: the optimizer sees the gradient of the loss plus ``alpha / 2 *
  ||backbone - pretrained||^2``.

  Args:
    name: one of ``sgd``, ``adam``, ``lookahead``, ``adan``, ``profit``.
    lr: the (main) learning rate.
    config: supplies ``n_ref``, ``ratio``, ``warmup_epochs``, ``head_only``,
      ``sgd_momentum``, ``lookahead_k``, ``lookahead_alpha``.
    steps_per_epoch: batches per epoch (``update`` calls), for PROFIT's
      warm-up.

  Returns:
    An :class:`Optimizer`.

  Raises:
    ValueError: naming ``name`` for an unknown optimizer.
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
    tx = optax.multi_transform(
      {"trainable": tx, "frozen": optax.set_to_zero()},
      head_only_labels,
    )
  if config.lp_epochs:
    if name in ("profit", "lookahead"):
      raise ValueError(f"`lp_epochs` (LP-FT) supports sgd, adam, adan; got {name!r}.")
    linear_probe = optax.multi_transform(
      {"trainable": optax.adam(config.lp_lr), "frozen": optax.set_to_zero()},
      head_only_labels,
    )
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
  if name == "profit":
    return Optimizer(
      tx=tx, wrap=_copy, loss_view=_identity, eval_view=optax_profit.eval_params
    )
  return Optimizer(tx=tx, wrap=_copy, loss_view=_identity, eval_view=lambda p, _: p)
