"""The paper's ViT-Tiny setting (Table 10's second block); see ``paper.py``."""

from examples.cifar.configs import default, paper


def get_config() -> default.Config:
  """ViT-Tiny/4, pre-trained 400 epochs, ``lambda_main / lambda_ref = 1000``."""
  return paper.paper_config("vit_tiny")
