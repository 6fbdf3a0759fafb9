"""Run names of the CIFAR-100-LT example: a readable prefix and a digest.

Every setting a run's result depends on goes into the digest, so a changed
setting gets a new folder and an unchanged one is found again (stage 1 resumes
from its orbax checkpoint, a finished stage 2 run's ``result.json`` is loaded):
``examples/common/runs.py``.
"""

from typing import Any

from examples.cifar_lt import methods
from examples.cifar_lt.configs import default
from examples.common.runs import run_name

#: The stage 2 methods whose final weights get a WiSE-FT curve.
WISE_METHODS = ("full", "full_profit")


def stage1_name(config: default.Config, data: Any) -> str:
  """Folder name of stage 1: the model, beta and a digest of its settings."""
  settings = {
    "model": config.model,
    "cnn_width": config.cnn_width if config.model == "cnn" else None,
    "counts": data.counts.tolist(),
    "lt_seed": config.lt_seed,
    "held_out": config.held_out_classes,
    "augment": config.augment,
    "optimizer": config.pretrain_optimizer,
    "lr": config.pretrain_lr,
    "weight_decay": config.pretrain_weight_decay,
    "epochs": config.pretrain_epochs,
    "batch_size": config.pretrain_batch_size,
    "seed": config.pretrain_seed,
  }
  return run_name(f"{config.model}-beta{data.beta:g}", settings)


def finetune_name(
  config: default.Config, stage1: str, method: str, lr: float, alpha: float, seed: int
) -> str:
  """Folder name of a stage 2 run: readable prefix + digest of its settings."""
  _, profit, l2sp = methods.METHODS[method]
  settings = {
    "stage1": stage1,
    "method": method,
    "lr": lr,
    "alpha": alpha if l2sp else None,
    "seed": seed,
    "main_optimizer": config.main_optimizer,
    "momentum": config.momentum if config.main_optimizer == "sgd" else None,
    "batch_size": config.batch_size,
    "budget_batches": config.budget_batches,
    "eval_points": list(config.eval_points),
    "cycle_length": config.cycle_length,
    "ratio": config.ratio if profit else None,
    "augment": config.augment,
    "wise_points": config.wise_points if method in WISE_METHODS else None,
  }
  prefix = f"{method}_lr{lr:g}" + (f"_a{alpha:g}" if l2sp else "") + f"_s{seed}"
  return run_name(prefix, settings)
