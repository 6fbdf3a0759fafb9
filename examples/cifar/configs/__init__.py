"""Configurations of the CIFAR example: ``get_config(name)`` loads one."""

import importlib

from examples.cifar.configs.default import Config

CONFIGS = (
  "default",
  "cpu_smoke",
  "cpu_frontier",
  "gpu_subsets",
  "paper",
  "paper_vit_tiny",
  "paper_vit_small",
)


def get_config(name: str) -> Config:
  """The config of module ``examples.cifar.configs.<name>``.

  Args:
    name: one of :data:`CONFIGS`.

  Returns:
    The module's ``get_config()``.

  Raises:
    ValueError: naming ``name`` if there is no such config.
  """
  if name not in CONFIGS:
    raise ValueError(f"`config` must be one of {CONFIGS}, got {name!r}.")
  module = importlib.import_module(f"examples.cifar.configs.{name}")
  return module.get_config()
