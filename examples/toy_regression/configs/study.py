"""Study configuration: the compute-matched frontier at three batch sizes.

Issue 11 (sections 2 and 4) on a CPU budget (about 15 minutes on 2 cores):
the paper's model, data and fine-tuning recipe (1,500 batches at 5e-4, x0.95
every 100 batches), the quick configuration's base training (2,500 steps at
batch 128, shared by every fine-tuning batch size), 3 seeds, and at each
fine-tuning batch size 32, 128 and 512 every family with the same budget of
1,500 batches: full fine-tuning at 1e-4 ... 1e-3, head only, L2-SP at alpha
1, 10, 100, PROFIT (compute-matched: 750 cycles) at main lr 5e-4 and 2e-3
with ratios 10 and 100, and WiSE-FT (11 mixing coefficients) of every full
fine-tuning and PROFIT run. The grid was fixed before the run.
"""

import dataclasses

from examples.toy_regression.configs import default, quick


def get_config() -> default.Config:
  """Returns the study configuration."""
  return dataclasses.replace(
    quick.get_config(),
    step_convention="batches",
    batch_sizes=(32, 128, 512),
    sweep_lrs=(1e-4, 2e-4, 5e-4, 1e-3),
    head_lrs=(5e-4,),
    l2sp_lrs=(5e-4,),
    l2sp_alphas=(1.0, 10.0, 100.0),
    sweep_profit_lrs=(5e-4, 2e-3),
    sweep_ratios=(10.0, 100.0),
    n_val=2_048,
    plot_grid=101,
  )
