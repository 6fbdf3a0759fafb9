"""optax-profit: PROFIT, the proximal fine-tuning optimizer, for Optax.

Example:
  >>> import optax, optax_profit
  >>> tx = optax_profit.profit(optax.adamw(1e-4), ref=1e-5)
"""

from optax_profit._evaluation import cycle_ended, eval_params
from optax_profit._profit import profit
from optax_profit._projection import Diagnostics, Projection, project_conflicting
from optax_profit._storage import Storage
from optax_profit._train_step import (
  check_stacked_batches,
  make_train_step,
  profit_diagnostics,
)
from optax_profit._types import (
  ProfitSpec,
  ProfitState,
  ProfitTransformation,
  profit_spec,
)

__version__ = "0.1.0"

__all__ = (
  "Diagnostics",
  "ProfitSpec",
  "ProfitState",
  "ProfitTransformation",
  "Projection",
  "Storage",
  "check_stacked_batches",
  "cycle_ended",
  "eval_params",
  "make_train_step",
  "profit",
  "profit_diagnostics",
  "profit_spec",
  "project_conflicting",
)
