"""The compute-matched frontier with the small CNN on the shared subsets (CPU).

``cpu_smoke``'s model and data, 1,000 held-out images per task, 10 pre-training
and 3 fine-tuning epochs (two evaluations each), 2 seeds, every family with
Adam, and the batch-size study at 32 and 512.
"""

import dataclasses

from examples.cifar.configs import cpu_smoke, default


def get_config() -> default.Config:
  """The CPU frontier configuration."""
  return dataclasses.replace(
    cpu_smoke.get_config(),
    c10_val_examples=1000,
    val_examples=1000,
    batch_size=128,
    pretrain_batch_size=128,
    pretrain_epochs=10,
    epochs=3,
    evals_per_epoch=2,
    wise_points=11,
    frontier_lrs=(3e-4, 1e-3, 3e-3),
    frontier_ratios=(10.0,),
    frontier_head_lrs=(1e-2,),
    l2sp_alphas=(0.01, 0.1, 1.0),
    l2sp_lr=3e-3,
    lp_lr=1e-2,
    seeds=(0, 1),
    batch_sizes=(32, 512),
  )
