"""Default configuration: a 4-layer, 128-wide byte-level LM.

Sized for a machine with an accelerator or a few idle CPU cores (about 0.8M
params, 256-byte windows); ``quick.py`` is the few-minute CPU version. All
fine-tuning runs consume the same number of batches (``ft_steps``): PROFIT,
with ``n_ref = 1``, takes half as many main-optimizer steps as AdamW.
"""

import dataclasses


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
    pretrain_steps: pre-training batches on the old domain.
    pretrain_lr: peak AdamW learning rate of pre-training (linear warm-up,
      cosine decay to a tenth).
    pretrain_warmup: warm-up batches of pre-training.
    weight_decay: AdamW weight decay (pre-training and fine-tuning).
    ft_steps: fine-tuning batches on the new domain, for every method.
    adamw_lrs: constant learning rates of the AdamW fine-tuning baseline.
    profit_lrs: constant learning rates of PROFIT's main optimizer (AdamW
      with the same weight decay).
    profit_ratio: ``lr_main / lr_ref`` of PROFIT (reference optimizer: SGD).
    n_ref: PROFIT's reference steps per cycle.
    eval_every: evaluate both domains every this many batches (rounded up
      to whole PROFIT cycles).
    checkpoint_every: save an orbax checkpoint every this many batches
      (rounded up to whole PROFIT cycles); runs resume from the latest one.
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
  profit_ratio: float = 100.0
  n_ref: int = 1
  # Bookkeeping.
  eval_every: int = 200
  checkpoint_every: int = 1000
  seed: int = 0


def get_config() -> Config:
  """Returns the default configuration."""
  return Config()
