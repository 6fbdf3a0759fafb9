"""Small CNN on the shared CIFAR subsets: Table 2's row on 2 CPU cores.

A 16-channel CNN (32k parameters), 15 pre-training epochs at Adam 1e-3, 5
fine-tuning epochs per optimizer over a three-point grid (SGD's 10x higher),
selected on 1,000 held-out CIFAR-100 images. PROFIT: ``n_ref`` 1, ratio 10.
"""

import dataclasses

from examples.cifar.configs import default


def get_config() -> default.Config:
  """The CPU smoke configuration."""
  return dataclasses.replace(
    default.get_config(),
    model="cnn",
    cnn_width=16,
    val_examples=1000,
    batch_size=128,
    eval_batch_size=1000,
    pretrain_epochs=15,
    pretrain_lr=1e-3,
    optimizer="profit",
    lr=1e-3,
    epochs=5,
    n_ref=1,
    ratio=10.0,
    sweep_lrs=(
      ("sgd", (3e-3, 1e-2, 3e-2)),
      ("adam", (3e-4, 1e-3, 3e-3)),
      ("lookahead", (3e-4, 1e-3, 3e-3)),
      ("adan", (3e-4, 1e-3, 3e-3)),
      ("profit", (3e-4, 1e-3, 3e-3)),
    ),
    sweep_epochs=(),
  )
