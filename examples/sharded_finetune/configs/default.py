"""Default configuration: a 4-layer, 128-wide byte-level LM (about 0.8M params).

Sized for an accelerator or a few idle CPU cores; ``quick.py`` is the
few-minute CPU version. :func:`validate` checks a configuration.
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters of the sharded fine-tuning example (``--set FIELD=VALUE``)."""

  # Data: modules whose name (``_`` stripped) starts with a letter up to
  # split_letter form the old (pre-training) domain, the others the new one;
  # a file is validation text when crc32(path) % val_mod == 0.
  split_letter: str = "m"
  val_mod: int = 10
  seq_len: int = 256  # Bytes per training window.
  batch_size: int = 32  # Global: all devices together.
  eval_windows: int = 512  # Validation windows per domain.
  # Model, and the (data, model) mesh: (0, 0) is model = 2 on an even device
  # count and data = the rest; one -1 is inferred.
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  d_ff: int = 512
  mesh_shape: tuple[int, int] = (0, 0)
  # Pre-training on the old domain (0 steps: none): AdamW, linear warm-up,
  # cosine decay to a tenth of pretrain_lr.
  pretrain_steps: int = 6000
  pretrain_lr: float = 2e-3
  pretrain_warmup: int = 200
  weight_decay: float = 0.01  # AdamW's, in pre-training and fine-tuning.
  # Fine-tuning: ft_steps batches for every method (PROFIT with n_ref = 1
  # takes half as many main steps). PROFIT around AdamW (profit_lrs) or SGD
  # with momentum 0.9 (profit_sgd_lrs: SGD keeps float rounding small where
  # Adam turns it into sign flips, so the multi-process tests compare these);
  # its reference optimizer is SGD at lr / profit_ratio.
  ft_steps: int = 2000
  adamw_lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4, 1e-3)
  profit_lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4, 1e-3)
  profit_sgd_lrs: tuple[float, ...] = ()
  profit_ratio: float = 100.0
  n_ref: int = 1  # PROFIT's reference steps per cycle.
  # Every this many batches, rounded up to whole calls of the train step.
  eval_every: int = 200
  checkpoint_every: int = 1000
  # "cycle": one PROFIT cycle (n_ref + 1 batches) per compiled call
  # (optax_profit.make_train_step); "per_call": one batch and one tx.update
  # per call (a checkpoint can fall between a reference and a main step).
  train_step: str = "cycle"
  seed: int = 0  # Data order and initialisation.


_POSITIVE_INTS = "seq_len batch_size eval_windows d_model num_layers num_heads d_ff ft_steps n_ref eval_every checkpoint_every"


def _is_int(value, low: int) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _checks(c: Config, data_parallelism: int | None):
  """``(ok, field, message)`` in order; lazily, so a check sees valid sizes."""
  for field in _POSITIVE_INTS.split():
    yield _is_int(getattr(c, field), 1), field, "must be an int >= 1"
  yield _is_int(c.pretrain_steps, 0), "pretrain_steps", "must be an int >= 0"
  yield c.pretrain_warmup >= 0, "pretrain_warmup", "must be >= 0"
  ok = c.train_step in ("cycle", "per_call")
  yield ok, "train_step", "must be 'cycle' or 'per_call'"
  yield c.d_model % c.num_heads == 0, "num_heads", f"must divide d_model ({c.d_model})"
  message = f"must be a multiple of batch_size ({c.batch_size})"
  yield c.eval_windows % c.batch_size == 0, "eval_windows", message
  for field in ("pretrain_lr", "profit_ratio"):
    value = getattr(c, field)
    yield math.isfinite(value) and value > 0, field, "must be finite and > 0"
  wd = c.weight_decay
  yield 0 <= wd < 1 and math.isfinite(wd), "weight_decay", "must be in [0, 1)"
  lrs = ("adamw_lrs", "profit_lrs", "profit_sgd_lrs")
  for field in lrs:
    ok = all(math.isfinite(lr) and lr > 0 for lr in getattr(c, field))
    yield ok, field, "must hold finite learning rates > 0"
  ok = any(getattr(c, field) for field in lrs)
  yield ok, "adamw_lrs", "and `profit_lrs` must not both be empty"
  letter = c.split_letter
  ok = len(letter) == 1 and "a" <= letter <= "y"
  yield ok, "split_letter", "must be one letter in a..y"
  yield c.val_mod >= 2, "val_mod", "must be >= 2"
  yield len(c.mesh_shape) == 2, "mesh_shape", "must be (data, model)"
  if data_parallelism is not None:
    message = f"must be divisible by the mesh's data axis ({data_parallelism})"
    yield c.batch_size % data_parallelism == 0, "batch_size", message


def validate(config: Config, data_parallelism: int | None = None) -> None:
  """Raises ``ValueError`` naming the field of a bad value (and ``--set``).

  ``data_parallelism``: the mesh's ``data`` size, if known (it must divide
  the batch size).
  """
  for ok, field, message in _checks(config, data_parallelism):
    if not ok:
      value = getattr(config, field)
      raise ValueError(f"`{field}` (--set {field}=...) {message}, got {value!r}.")


def get_config() -> Config:
  """Returns the default configuration."""
  return Config()
