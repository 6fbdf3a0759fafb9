"""Seconds-long: the test suite's end-to-end run (any CIFAR-100 data, mock too).

A 4-channel CNN, 10 images of class 0 (``n_max``), one beta, one stage 1
epoch, 8 stage 2 batches of 4, one learning rate per family, 3 WiSE-FT points.
"""

import dataclasses

from examples.cifar_lt.configs import default


def get_config() -> default.Config:
  """The smoke configuration."""
  return dataclasses.replace(
    default.get_config(),
    model="cnn",
    cnn_width=4,
    test_examples=200,
    betas=(10.0,),
    n_max=10,
    eval_batch_size=100,
    pretrain_optimizer="adam",
    pretrain_lr=1e-3,
    pretrain_weight_decay=0.0,
    pretrain_epochs=1,
    pretrain_batch_size=16,
    batch_size=4,
    budget_batches=8,
    eval_points=(4, 8),
    full_lrs=(1e-2,),
    head_lrs=(1e-2,),
    l2sp_alphas=(1.0,),
    l2sp_lrs=(1e-2,),
    wise_points=3,
    thresholds=(0.9, 0.5),
    relative_thresholds=True,
    seeds=(0,),
    checkpoint_every=1,
    progress=False,
  )
