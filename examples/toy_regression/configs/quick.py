"""Quick configuration: the CPU demo (about two minutes on 2 cores).

Same data, model, optimizer and fine-tuning recipe as ``default.py`` (1,500
fine-tuning steps at 5e-4, x0.95 every 100 steps, PROFIT in both step
conventions, 3 seeds). Shorter base training (2,500 steps, the x0.9 decay
every 125 steps instead of 500), batches of 128 instead of 256, a smaller test
set, and a sweep of one extra learning rate of full fine-tuning (1e-4),
L2-SP at alpha 1, 10 and 100, and WiSE-FT of the full and PROFIT runs beside
the table's runs.
"""

import dataclasses

from examples.toy_regression.configs import default


def get_config() -> default.Config:
  """Returns the quick configuration."""
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
