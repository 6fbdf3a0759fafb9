"""Quick configuration: the same experiment, small enough for a 2-core CPU."""

import dataclasses

from examples.sharded_finetune.configs import default


def get_config() -> default.Config:
  """A 2-layer, 64-wide model on 64-byte windows, trained briefly: the numbers
  show the mechanics, not a converged pre-trained model."""
  return dataclasses.replace(
    default.get_config(),
    **dict(seq_len=64, batch_size=16, eval_windows=128),
    **dict(d_model=64, num_layers=2, num_heads=4, d_ff=256),
    **dict(pretrain_steps=1000, pretrain_lr=3e-3, pretrain_warmup=50, ft_steps=200),
    adamw_lrs=(1e-4, 3e-4, 1e-3, 3e-3),
    profit_lrs=(1e-4, 3e-4, 1e-3, 3e-3),
    **dict(eval_every=40, checkpoint_every=200),
  )
