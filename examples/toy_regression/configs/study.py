"""The compute-matched frontier at fine-tuning batch sizes 32, 128, 512 (~15 min)."""

import dataclasses

from examples.toy_regression.configs import default, quick


def get_config() -> default.Config:
  return dataclasses.replace(
    quick.get_config(),
    step_convention="batches",
    batch_sizes=(32, 128, 512),
    sweep_lrs=(1e-4, 2e-4, 5e-4, 1e-3),
    sweep_profit_lrs=(5e-4, 2e-3),
    sweep_ratios=(10.0, 100.0),
    plot_grid=101,
  )
