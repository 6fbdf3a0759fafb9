"""Configurations of the CIFAR-100-LT example: ``get_config(name)`` loads one."""

import importlib

from examples.cifar_lt.configs.default import Config

CONFIGS = ("cpu", "smoke", "paper")


def get_config(name: str) -> Config:
  """The config of module ``examples.cifar_lt.configs.<name>``.

  Args:
    name: one of :data:`CONFIGS`.

  Returns:
    The module's ``get_config()``.

  Raises:
    ValueError: naming ``config`` if there is no such config.
  """
  if name not in CONFIGS:
    raise ValueError(f"`config` must be one of {CONFIGS}, got {name!r}.")
  return importlib.import_module(f"examples.cifar_lt.configs.{name}").get_config()
