"""The optimizers of the toy regression: RMSProp, staircase decays, PROFIT.

Base training and full / L2-SP fine-tuning use PyTorch-style RMSProp with a
staircase learning-rate decay; head-only fine-tuning freezes every layer but
the head; PROFIT wraps the same RMSProp, its reference optimizer plain SGD.
"""

from typing import Any

import flax.traverse_util
import jax
import optax

import optax_profit
from examples.toy_regression import models, runs
from examples.toy_regression.configs import default

Config = default.Config
Params = Any
RunSpec = runs.RunSpec


def _staircase(init: float, every: float, rate: float) -> optax.Schedule:
  return optax.exponential_decay(
    init_value=init,
    transition_steps=max(1, round(every)),
    decay_rate=rate,
    staircase=True,
  )


def rmsprop(config: Config, lr: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """RMSProp with PyTorch's semantics (eps outside the square root)."""
  return optax.rmsprop(
    lr, decay=config.rmsprop_decay, eps=config.rmsprop_eps, eps_in_sqrt=False
  )


def base_optimizer(config: Config) -> optax.GradientTransformation:
  """RMSProp at ``base_lr``, decayed by ``base_decay_rate`` (staircase)."""
  return rmsprop(
    config,
    _staircase(config.base_lr, config.base_decay_every, config.base_decay_rate),
  )


def head_labels(params: Params) -> Params:
  """``"train"`` for the last Dense layer's leaves, ``"freeze"`` elsewhere."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict(
    {k: "train" if models.HEAD in k else "freeze" for k in flat}
  )


def finetune_optimizer(
  spec: RunSpec,
  config: Config,
  lr: jax.typing.ArrayLike | None = None,
  ratio: jax.typing.ArrayLike | None = None,
) -> optax.GradientTransformation:
  """The optimizer of one fine-tuning run.

  Args:
    spec: the run.
    config: the configuration.
    lr: overrides ``spec.lr`` (may be a traced scalar: runs that differ only
      in ``lr`` and ``ratio`` then share one compiled step).
    ratio: overrides ``spec.ratio`` (may be traced).

  Returns:
    RMSProp at ``lr`` with the staircase decay (``full`` and ``l2sp``, whose
    penalty is in the loss); the same on the head only, ``optax.set_to_zero()``
    elsewhere (``head``); or ``optax_profit.profit`` around it with SGD
    reference steps at ``lr / ratio`` following the same schedule
    (``profit``).
  """
  lr = spec.lr if lr is None else lr
  ratio = spec.ratio if ratio is None else ratio
  every = config.ft_decay_every
  if spec.method == "profit" and spec.convention == "batches":
    every = config.ft_decay_every / (config.n_ref + 1)  # in main steps
  schedule = _staircase(lr, every, config.ft_decay_rate)
  main = rmsprop(config, schedule)
  if spec.method in ("full", "l2sp"):
    return main
  if spec.method == "head":
    return optax.multi_transform(
      {"train": main, "freeze": optax.set_to_zero()}, head_labels
    )
  n_ref = config.n_ref

  def ref_schedule(ref_count: jax.Array) -> jax.Array:
    # ref_count counts reference steps (n_ref per cycle): keep lr/ratio fixed.
    return schedule(ref_count // n_ref) / ratio

  return optax_profit.profit(
    main,
    ref=ref_schedule,
    n_ref=n_ref,
    storage=config.storage,
    delta_dtype=config.delta_dtype,
  )
