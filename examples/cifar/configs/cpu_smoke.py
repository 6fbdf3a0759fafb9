"""Small CNN on the shared CIFAR subsets: Table 2's row on 2 CPU cores.

Meant for ``--set data_dir=../shared/data/tfds`` (real 10,000/2,000-image subsets
of CIFAR-10 and CIFAR-100); it runs unchanged on the full datasets. A 16-channel
CNN (32k parameters) pre-trained for 15 epochs with Adam 1e-3 (the
paper's 1e-4 does not get anywhere in 15 epochs), then 5 fine-tuning epochs
per run. Every optimizer gets the same epochs (the same batches, in the same
order) and the same three-point learning-rate grid (SGD: a grid 10x higher,
with momentum 0.9); each optimizer's best learning rate on 1,000 held-out
CIFAR-100 training images goes into the table. PROFIT: ``n_ref = 1``,
``lambda_main / lambda_ref = 10``.
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
