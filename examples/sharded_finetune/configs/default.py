"""Default configuration: a 4-layer, 128-wide byte-level LM.

Sized for a machine with an accelerator or a few idle CPU cores (about 0.8M
params, 256-byte windows); ``quick.py`` is the few-minute CPU version. All
fine-tuning runs consume the same number of batches (``ft_steps``): PROFIT,
with ``n_ref = 1``, takes half as many main-optimizer steps as AdamW.
:func:`validate` checks a configuration before anything runs.
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters of the sharded fine-tuning example.

  Attributes:
    split_letter: modules whose name (leading ``_`` stripped) starts with a
      letter up to this one form the old (pre-training) domain, the others
      the new (fine-tuning) domain.
    val_mod: a file is held out for validation when ``crc32(path) % val_mod
      == 0``.
    seq_len: tokens (bytes) per training window.
    batch_size: global batch size (windows per batch, all devices together).
    eval_windows: validation windows per domain (a multiple of
      ``batch_size``).
    d_model: model width.
    num_layers: transformer blocks.
    num_heads: attention heads.
    d_ff: MLP hidden width.
    mesh_shape: ``(data, model)`` mesh sizes; ``(0, 0)`` picks ``model = 2``
      on an even device count and ``data`` = the rest; one ``-1`` is
      inferred.
    pretrain_steps: pre-training batches on the old domain (0: fine-tune the
      freshly initialised model).
    pretrain_lr: peak AdamW learning rate of pre-training (linear warm-up,
      cosine decay to a tenth).
    pretrain_warmup: warm-up batches of pre-training.
    weight_decay: AdamW weight decay (pre-training and fine-tuning).
    ft_steps: fine-tuning batches on the new domain, for every method.
    adamw_lrs: constant learning rates of the AdamW fine-tuning baseline.
    profit_lrs: constant learning rates of PROFIT's main optimizer (AdamW
      with the same weight decay).
    profit_sgd_lrs: learning rates of PROFIT runs whose main optimizer is SGD
      with momentum 0.9 (method ``profit_sgd``; default none). SGD turns
      float rounding into float rounding, where Adam turns it into sign
      flips: the multi-process tests compare these runs across process
      counts to float32 rounding.
    profit_ratio: ``lr_main / lr_ref`` of PROFIT (reference optimizer: SGD).
    n_ref: PROFIT's reference steps per cycle.
    eval_every: evaluate both domains every this many batches (rounded up
      to whole calls of ``cycle_length = n_ref + 1`` batches).
    checkpoint_every: save an orbax checkpoint every this many batches
      (rounded up to whole calls of ``cycle_length`` batches); runs resume
      from the latest one.
    train_step: ``"cycle"``: one PROFIT cycle (``n_ref + 1`` batches) per
      compiled call, ``optax_profit.make_train_step``; ``"per_call"``: one
      batch and one ``tx.update`` per call (checkpoints can then fall
      between a reference step and its main step).
    seed: fixes the data order and the initialisation.
  """

  # Data.
  split_letter: str = "m"
  val_mod: int = 10
  seq_len: int = 256
  batch_size: int = 32
  eval_windows: int = 512
  # Model.
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  d_ff: int = 512
  # Mesh.
  mesh_shape: tuple[int, int] = (0, 0)
  # Pre-training on the old domain.
  pretrain_steps: int = 6000
  pretrain_lr: float = 2e-3
  pretrain_warmup: int = 200
  weight_decay: float = 0.01
  # Fine-tuning on the new domain.
  ft_steps: int = 2000
  adamw_lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4, 1e-3)
  profit_lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4, 1e-3)
  profit_sgd_lrs: tuple[float, ...] = ()
  profit_ratio: float = 100.0
  n_ref: int = 1
  # Bookkeeping.
  eval_every: int = 200
  checkpoint_every: int = 1000
  train_step: str = "cycle"
  seed: int = 0


#: Integer fields that must be >= 1.
_POSITIVE_INTS = (
  "seq_len",
  "batch_size",
  "eval_windows",
  "d_model",
  "num_layers",
  "num_heads",
  "d_ff",
  "ft_steps",
  "n_ref",
  "eval_every",
  "checkpoint_every",
)


def validate(config: Config, data_parallelism: int | None = None) -> None:
  """Raises ``ValueError`` naming the field of a bad value.

  Args:
    config: the configuration to check.
    data_parallelism: size of the mesh's ``data`` axis, if known (the batch
      size must be divisible by it).

  Raises:
    ValueError: naming the field (and how to set it, ``--set FIELD=VALUE``).
  """

  def check(ok: bool, field: str, message: str) -> None:
    if not ok:
      raise ValueError(
        f"`{field}` (--set {field}=...) {message}, got {getattr(config, field)!r}."
      )

  for field in _POSITIVE_INTS:
    value = getattr(config, field)
    check(
      isinstance(value, int) and not isinstance(value, bool) and value >= 1,
      field,
      "must be an int >= 1",
    )
  check(
    isinstance(config.pretrain_steps, int)
    and not isinstance(config.pretrain_steps, bool)
    and config.pretrain_steps >= 0,
    "pretrain_steps",
    "must be an int >= 0",
  )
  check(config.pretrain_warmup >= 0, "pretrain_warmup", "must be >= 0")
  check(
    config.train_step in ("cycle", "per_call"),
    "train_step",
    "must be 'cycle' or 'per_call'",
  )
  check(
    config.d_model % config.num_heads == 0,
    "num_heads",
    f"must divide d_model ({config.d_model})",
  )
  check(
    config.eval_windows % config.batch_size == 0,
    "eval_windows",
    f"must be a multiple of batch_size ({config.batch_size})",
  )
  for field in ("pretrain_lr", "profit_ratio"):
    value = getattr(config, field)
    check(math.isfinite(value) and value > 0, field, "must be finite and > 0")
  check(
    0 <= config.weight_decay < 1 and math.isfinite(config.weight_decay),
    "weight_decay",
    "must be in [0, 1)",
  )
  for field in ("adamw_lrs", "profit_lrs", "profit_sgd_lrs"):
    lrs = getattr(config, field)
    check(
      all(math.isfinite(lr) and lr > 0 for lr in lrs),
      field,
      "must hold finite learning rates > 0",
    )
  check(
    bool(config.adamw_lrs or config.profit_lrs or config.profit_sgd_lrs),
    "adamw_lrs",
    "and `profit_lrs` must not both be empty",
  )
  check(
    len(config.split_letter) == 1 and "a" <= config.split_letter <= "y",
    "split_letter",
    "must be one letter in a..y",
  )
  check(config.val_mod >= 2, "val_mod", "must be >= 2")
  check(len(config.mesh_shape) == 2, "mesh_shape", "must be (data, model)")
  if data_parallelism is not None:
    check(
      config.batch_size % data_parallelism == 0,
      "batch_size",
      f"must be divisible by the mesh's data axis ({data_parallelism})",
    )


def get_config() -> Config:
  """Returns the default configuration."""
  return Config()
