"""The compute-matched frontier with the small CNN on the shared subsets (CPU).

The ``cpu_smoke`` model and data (16-channel CNN, the 10,000/2,000-image
subsets), sized so that every family and the batch-size study finish in about
25 minutes on 2 cores: 1,000 CIFAR-10 training images held out from
pre-training (old-task validation) and 1,000 CIFAR-100 training images
(new-task validation), 10 pre-training epochs (Adam 1e-3, batch 128, cached and
shared by every batch size), then 3 fine-tuning epochs per run with two
evaluations per epoch. All families use Adam: full fine-tuning, LP-FT (1 epoch
of the head alone at 1e-2, then 2 of everything) and PROFIT(Adam, ratio 10,
``n_ref`` 1) at 3e-4, 1e-3 and 3e-3; L2-SP at 3e-3 with alpha 0.01, 0.1, 1;
head only at 1e-2; WiSE-FT (11 points) of every full fine-tuning and PROFIT
run; 2 fine-tuning seeds. The batch-size study reruns full fine-tuning and
PROFIT (and their WiSE-FT curves) at batch sizes 32 and 512 for seed 0, with
the same 3 epochs (so the same examples, 4x more or fewer batches).
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
