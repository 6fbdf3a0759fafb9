"""Run naming, caching and resume of the CIFAR example.

A run lives in a folder named by a readable prefix and a digest of every
setting that changes its result: ``<workdir>/pretrain/<model>-<digest>`` for
pre-training and ``<workdir>/finetune/<optimizer>_lr<lr>...-<digest>`` for a
fine-tuning run. An orbax ``CheckpointManager`` in ``<folder>/checkpoints``
holds the latest training state and the history so far; a finished run
leaves ``result.json``, and the next command loads it instead of training
again. That is how pre-training is shared and sweeps resume. The mechanics
(digests, checkpoints, result files) are ``examples/common/runs.py``'s.
"""

from typing import Any

from examples.cifar.configs import default
from examples.common.runs import digest

Params = Any
Metrics = dict[str, Any]


def pretrain_batch_size(config: default.Config) -> int:
  """Pre-training's batch size (``batch_size`` unless set on its own)."""
  return config.pretrain_batch_size or config.batch_size


def pretrain_name(config: default.Config, sizes: dict[str, int]) -> str:
  """Folder name of the pre-training run: the model and a digest of its settings.

  Args:
    config: supplies the model and the pre-training settings.
    sizes: the data's split sizes (``input_pipeline.Data.sizes()``).

  Returns:
    ``<model>-<digest>``.
  """
  settings = {
    "model": config.model,
    "cnn_width": config.cnn_width if config.model == "cnn" else None,
    "epochs": config.pretrain_epochs,
    "lr": config.pretrain_lr,
    "batch_size": pretrain_batch_size(config),
    "seed": config.seed,
    "c10_train": sizes["c10_train"],
  }
  return f"{config.model}-{digest(settings)}"


def finetune_name(
  config: default.Config,
  sizes: dict[str, int],
  pretrained_name: str,
  optimizer: str,
  lr: float,
  epochs: int,
) -> str:
  """Folder name of a fine-tuning run: readable prefix + settings digest.

  Settings at their defaults (no L2-SP, no LP phase, one evaluation per
  epoch, no WiSE-FT curve) are left out of the digest, so the runs of the
  Table 2 sweep keep their names.

  Args:
    config: the run's configuration.
    sizes: the data's split sizes.
    pretrained_name: the folder name of the pre-training run it starts from.
    optimizer: the fine-tuning optimizer.
    lr: its learning rate.
    epochs: fine-tuning epochs.

  Returns:
    ``<optimizer>_lr<lr>[_head][_l2sp<alpha>][_lpft<epochs>]-<digest>``.
  """
  settings: dict[str, Any] = {
    "pretrain": pretrained_name,
    "optimizer": optimizer,
    "lr": lr,
    "epochs": epochs,
    "batch_size": config.batch_size,
    "n_ref": config.n_ref,
    "head_only": config.head_only,
    "seed": config.seed,
    "sizes": sizes,
  }
  if optimizer == "profit":
    settings.update(ratio=config.ratio, warmup_epochs=config.warmup_epochs)
  if optimizer == "sgd":
    settings.update(momentum=config.sgd_momentum)
  if optimizer == "lookahead":
    settings.update(k=config.lookahead_k, alpha=config.lookahead_alpha)
  if config.l2sp_alpha:
    settings.update(l2sp_alpha=config.l2sp_alpha)
  if config.lp_epochs:
    settings.update(lp_epochs=config.lp_epochs, lp_lr=config.lp_lr)
  if config.evals_per_epoch != 1:
    settings.update(evals_per_epoch=config.evals_per_epoch)
  if config.wise_points:
    settings.update(wise_points=config.wise_points)
  name = f"{optimizer}_lr{lr:g}"
  if optimizer == "profit" and config.ratio != 10.0:
    name += f"_ratio{config.ratio:g}"
  if config.head_only:
    name += "_head"
  if config.l2sp_alpha:
    name += f"_l2sp{config.l2sp_alpha:g}"
  if config.lp_epochs:
    name += f"_lpft{config.lp_epochs}"
  return f"{name}-{digest(settings)}"


def checkpoint_due(config: default.Config, epoch: int, last: int) -> bool:
  """Whether to checkpoint after ``epoch`` (every ``checkpoint_every``, and the last)."""
  return epoch % config.checkpoint_every == 0 or epoch == last


def finetune_result(
  config: default.Config,
  optimizer: str,
  lr: float,
  epochs: int,
  history: list[Metrics],
  clock: list[float],
  directory: Any,
) -> Metrics:
  """A fine-tuning run's ``result.json`` (without its WiSE-FT curve)."""
  profit = optimizer == "profit"
  final = {
    k: v
    for k, v in history[-1].items()
    if k.startswith(("c10_", "c100_", "train_", "projected_", "removed_", "cosine"))
  }
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
    "final": final,
    "history": history,
    "wall_s": clock[0],
    "cpu_s": clock[1],
    "directory": str(directory),
  }
