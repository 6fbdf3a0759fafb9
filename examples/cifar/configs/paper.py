"""The paper's ResNet-18 setting (Sec. 4.2, Appendix C.2.5, Tables 2, 9 and 10).

For a GPU and the full datasets. Where the paper is silent (see the README):
batch 128, two-point grids for SGD (momentum 0.9) and Adan, Adam inside
Lookahead, GroupNorm, no schedule or weight decay, 5,000 held-out images.
"""

import dataclasses

from examples.cifar.configs import default

# Per backbone: pre-training epochs and PROFIT's ratio (Table 9), and per
# optimizer the fine-tuning learning rates and epochs (Table 10).
PRETRAINING = {
  "resnet18": (200, 10.0),
  "vit_tiny": (400, 1000.0),
  "vit_small": (400, 100.0),
}
TABLE_10 = {
  "resnet18": {
    "sgd": ((1e-3, 1e-2), 200),
    "adam": ((1e-4,), 200),
    "lookahead": ((1e-4,), 100),
    "adan": ((1e-4, 1e-3), 200),
    "profit": ((1e-4,), 100),
  },
  "vit_tiny": {
    "sgd": ((1e-3, 1e-2), 400),
    "adam": ((1e-5,), 400),
    "lookahead": ((1e-4,), 200),
    "adan": ((1e-5, 1e-4), 400),
    "profit": ((1e-4,), 200),
  },
  "vit_small": {
    "sgd": ((1e-3, 1e-2), 400),
    "adam": ((3e-4,), 400),
    "lookahead": ((3e-4,), 200),
    "adan": ((3e-5, 3e-4), 400),
    "profit": ((3e-4,), 200),
  },
}


def paper_config(model: str) -> default.Config:
  """The paper's setting for ``model``, a key of :data:`TABLE_10`."""
  (pretrain_epochs, ratio), rows = PRETRAINING[model], TABLE_10[model]
  return dataclasses.replace(
    default.get_config(),
    model=model,
    pretrain_epochs=pretrain_epochs,
    pretrain_lr=1e-4,
    optimizer="profit",
    lr=rows["profit"][0][0],
    epochs=rows["profit"][1],
    ratio=ratio,
    n_ref=1,
    val_examples=5000,
    sweep_lrs=tuple((name, lrs) for name, (lrs, _) in rows.items()),
    sweep_epochs=tuple((name, epochs) for name, (_, epochs) in rows.items()),
    checkpoint_every=5,
    data_threads=4,
  )


def get_config() -> default.Config:
  """ResNet-18, Table 10's first block."""
  return paper_config("resnet18")
