"""Run naming, caching and resume of the CIFAR example.

A run lives in a folder named by a readable prefix and a digest of every
setting that changes its result: ``<workdir>/pretrain/<model>-<digest>`` for
pre-training and ``<workdir>/finetune/<optimizer>_lr<lr>...-<digest>`` for a
fine-tuning run. An orbax ``CheckpointManager`` in ``<folder>/checkpoints``
holds the latest training state and the history so far; a finished run
leaves ``result.json``, and the next command loads it instead of training
again. That is how pre-training is shared and sweeps resume.
"""

import hashlib
import json
import pathlib
from typing import Any

import orbax.checkpoint as ocp

from examples.cifar.configs import default

Params = Any
Metrics = dict[str, Any]


def digest(payload: Any) -> str:
  """A short, stable hash of a JSON-serializable ``payload``."""
  text = json.dumps(payload, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def pretrain_batch_size(config: default.Config) -> int:
  """Pre-training's batch size (``batch_size`` unless set on its own)."""
  return config.pretrain_batch_size or config.batch_size


def pretrain_name(config: default.Config, sizes: dict[str, int]) -> str:
  """Folder name of the pre-training run: the model and a digest of its settings.

  Args:
    config: supplies the model and the pre-training settings.
    sizes: the data's split sizes (``Data.sizes()``).

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


def manager(directory: pathlib.Path) -> ocp.CheckpointManager:
  """The run's checkpoint manager (latest checkpoint only, synchronous)."""
  return ocp.CheckpointManager(
    directory.absolute() / "checkpoints",
    options=ocp.CheckpointManagerOptions(
      max_to_keep=1, create=True, enable_async_checkpointing=False
    ),
  )


def save(
  mngr: ocp.CheckpointManager, epoch: int, state: Params, history: list[Metrics]
) -> None:
  """Saves the training ``state`` and the ``history`` so far at ``epoch``."""
  mngr.save(
    epoch,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      history=ocp.args.JsonSave(history),
    ),
  )
  mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, target: Params):
  """``(epoch, state, history)`` of the latest checkpoint, or None.

  Args:
    mngr: the run's manager.
    target: a state of the saved structure (shapes and dtypes).

  Returns:
    The restored triple, or None when the run has no checkpoint yet.
  """
  epoch = mngr.latest_step()
  if epoch is None:
    return None
  restored = mngr.restore(
    epoch,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target),
      history=ocp.args.JsonRestore(),
    ),
  )
  return epoch, restored["state"], list(restored["history"])


def checkpoint_due(config: default.Config, epoch: int, last: int) -> bool:
  """Whether to checkpoint after ``epoch`` (every ``checkpoint_every``, and the last)."""
  return epoch % config.checkpoint_every == 0 or epoch == last


def write_json(path: pathlib.Path, payload: Any) -> None:
  """Writes ``payload`` as JSON atomically (a temporary file, then a rename)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(payload, indent=1, default=str))
  tmp.replace(path)


def load_result(path: pathlib.Path) -> dict[str, Any] | None:
  """A finished run's ``result.json``, or None when it has not finished."""
  if not path.exists():
    return None
  return json.loads(path.read_text())
