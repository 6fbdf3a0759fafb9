"""ResNet-18 on the shared CIFAR subsets, sized for a few minutes on one GPU.

The cpu_smoke protocol (10,000/2,000-image subsets, 1,000 held-out CIFAR-100
images, Adam 1e-3 pre-training, the same epochs and batches for every
optimizer) with the paper's ResNet-18: 30 pre-training epochs, 15 fine-tuning
epochs, and one learning rate per optimizer to bound the compile time: Table
10's 1e-4 for Adam, Lookahead and PROFIT (ratio 10, Table 2's ResNet-18
setting), the same 1e-4 for Adan and 1e-2 for SGD with momentum (Table 10
gives neither). These are not tuned: treat the table as a smoke test at GPU
scale, not as a comparison. About 4 minutes on one H100, most of it
compilation.
"""

import dataclasses

from examples.cifar.configs import cpu_smoke, default


def get_config() -> default.Config:
  """ResNet-18, 30 pre-training epochs, 15 fine-tuning epochs per optimizer."""
  return dataclasses.replace(
    cpu_smoke.get_config(),
    model="resnet18",
    pretrain_epochs=30,
    pretrain_lr=1e-3,
    epochs=15,
    lr=1e-4,
    ratio=10.0,
    sweep_lrs=(
      ("sgd", (1e-2,)),
      ("adam", (1e-4,)),
      ("lookahead", (1e-4,)),
      ("adan", (1e-4,)),
      ("profit", (1e-4,)),
    ),
    eval_batch_size=1000,
    checkpoint_every=5,
    data_threads=2,
  )
