"""ResNet-18 on the shared CIFAR subsets, a few minutes on one GPU (H100).

``cpu_smoke``'s protocol, 30 + 15 epochs, one untuned learning rate per
optimizer: a smoke test at GPU scale, not a comparison.
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
