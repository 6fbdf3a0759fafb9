"""The paper's ViT-Small setting (Table 10's third block); see ``paper.py``."""

from examples.cifar.configs import default, paper


def get_config() -> default.Config:
  """ViT-Small/4, pre-trained 400 epochs, ``lambda_main / lambda_ref = 100``."""
  return paper.paper_config("vit_small")
