"""The CPU demo (~2 min, 2 cores): paper recipe, shorter base training, small sweep."""

import dataclasses

from examples.toy_regression.configs import default


def get_config() -> default.Config:
  return dataclasses.replace(
    default.get_config(),
    batch_size=128,
    base_steps=2_500,
    base_decay_every=125,
    n_test=2_048,
    sweep_lrs=(1e-4, 5e-4),
    sweep_ratios=(100.0,),
    sweep_profit_lrs=(5e-4,),
    plot_grid=121,
  )
