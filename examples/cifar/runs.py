"""Run names (prefix and settings digest) and results; the Table 2 sweep."""

from collections.abc import Callable
from typing import Any

from examples.cifar.configs import default
from examples.common.runs import digest

Metrics = dict[str, Any]

# The optimizer's own settings in a fine-tuning run's digest: key -> field.
_OPTIMIZER_SETTINGS = {
  "profit": {"ratio": "ratio", "warmup_epochs": "warmup_epochs"},
  "sgd": {"momentum": "sgd_momentum"},
  "lookahead": {"k": "lookahead_k", "alpha": "lookahead_alpha"},
}


def pretrain_name(config: default.Config, sizes: dict[str, int]) -> str:
  """``<model>-<digest of the pre-training settings and the CIFAR-10 size>``."""
  settings = {
    "model": config.model,
    "cnn_width": config.cnn_width if config.model == "cnn" else None,
    "epochs": config.pretrain_epochs,
    "lr": config.pretrain_lr,
    "batch_size": config.pretrain_batch_size or config.batch_size,
    "seed": config.seed,
    "c10_train": sizes["c10_train"],
  }
  return f"{config.model}-{digest(settings)}"


def finetune_name(config, sizes, pretrained_name, optimizer, lr, epochs) -> str:
  """``<optimizer>_lr<lr>[_ratio<r>][_head][_l2sp<a>][_lpft<epochs>]-<digest>``.

  Settings at their defaults stay out of the digest (the runs keep their names).
  """
  c = config
  settings: dict[str, Any] = {
    "pretrain": pretrained_name,
    "optimizer": optimizer,
    "lr": lr,
    "epochs": epochs,
    "batch_size": c.batch_size,
    "n_ref": c.n_ref,
    "head_only": c.head_only,
    "seed": c.seed,
    "sizes": sizes,
  }
  for key, field in _OPTIMIZER_SETTINGS.get(optimizer, {}).items():
    settings[key] = getattr(c, field)
  if c.l2sp_alpha:
    settings.update(l2sp_alpha=c.l2sp_alpha)
  if c.lp_epochs:
    settings.update(lp_epochs=c.lp_epochs, lp_lr=c.lp_lr)
  if c.evals_per_epoch != 1:
    settings.update(evals_per_epoch=c.evals_per_epoch)
  if c.wise_points:
    settings.update(wise_points=c.wise_points)
  name = f"{optimizer}_lr{lr:g}"
  name += f"_ratio{c.ratio:g}" if optimizer == "profit" and c.ratio != 10.0 else ""
  name += "_head" if c.head_only else ""
  name += f"_l2sp{c.l2sp_alpha:g}" if c.l2sp_alpha else ""
  name += f"_lpft{c.lp_epochs}" if c.lp_epochs else ""
  return f"{name}-{digest(settings)}"


_FINAL_PREFIXES = ("c10_", "c100_", "train_", "projected_", "removed_", "cosine")


def finetune_result(config, optimizer, lr, epochs, history, clock, directory):
  """A fine-tuning run's ``result.json`` (without its WiSE-FT curve)."""
  profit = optimizer == "profit"
  return {
    "optimizer": optimizer,
    "lr": lr,
    "epochs": epochs,
    "batch_size": config.batch_size,
    "seed": config.seed,
    "n_ref": config.n_ref,
    "ratio": config.ratio if profit else None,
    "ref_lr": lr / config.ratio if profit else None,
    "warmup_epochs": config.warmup_epochs if profit else 0,
    "head_only": config.head_only,
    "l2sp_alpha": config.l2sp_alpha,
    "lp_epochs": config.lp_epochs,
    "lp_lr": config.lp_lr if config.lp_epochs else None,
    "batches_seen": history[-1]["batches_seen"],
    "main_steps": history[-1]["main_steps"],
    "final": {k: v for k, v in history[-1].items() if k.startswith(_FINAL_PREFIXES)},
    "history": history,
    "wall_s": clock[0],
    "cpu_s": clock[1],
    "directory": str(directory),
  }


def sweep(config: default.Config, finetune: Callable[..., Metrics]) -> Metrics:
  """Table 2's sweep (``config.sweep``) or one run, by ``finetune(name, lr, epochs)``.

  Per optimizer, the run with the best held-out CIFAR-100 accuracy (test
  without held-out images; ties: the lower lr) is ``selected``.
  """
  if config.sweep:
    plan = [
      (name, lr, config.epochs_for(name))
      for name in config.sweep_optimizers
      for lr in config.lrs_for(name)
    ]
  else:
    plan = [(config.optimizer, config.lr, config.epochs)]
  done = [finetune(name, lr, epochs) for name, lr, epochs in plan]
  key = "c100_val_accuracy" if config.val_examples else "c100_test_accuracy"
  selected = {}
  for name in dict.fromkeys(name for name, _, _ in plan):
    ran = [r for r in done if r["optimizer"] == name]
    selected[name] = max(ran, key=lambda r: (r["final"][key], -r["lr"]))
    selected[name]["selected"] = True
  metric = "test accuracy (no validation split)"
  metric = "validation accuracy" if config.val_examples else metric
  return {"runs": done, "selected": selected, "selection_metric": f"CIFAR-100 {metric}"}
