"""Configurations of the CIFAR example: ``get_config(name)`` loads one."""

import importlib

from examples.cifar.configs.default import Config

CONFIGS = tuple(
  "default cpu_smoke cpu_frontier gpu_subsets paper paper_vit_tiny "
  "paper_vit_small".split()
)


def get_config(name: str) -> Config:
  """``examples.cifar.configs.<name>.get_config()``, ``name`` in :data:`CONFIGS`."""
  if name not in CONFIGS:
    raise ValueError(f"`config` must be one of {CONFIGS}, got {name!r}.")
  return importlib.import_module(f"examples.cifar.configs.{name}").get_config()
