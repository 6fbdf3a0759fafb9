"""Table 2's sweep: every optimizer over its learning-rate grid, one selected.

Each optimizer's selected run is the one with the best CIFAR-100 accuracy on
the held-out training images (the test set when there are none); ties go to
the lower learning rate. Training is ``train.py``'s, passed in.
"""

from collections.abc import Callable
from typing import Any

from examples.cifar.configs import default


def _select(config: default.Config, results: list[dict[str, Any]]) -> dict[str, Any]:
  key = "c100_val_accuracy" if config.val_examples else "c100_test_accuracy"
  best = max(results, key=lambda r: (r["final"][key], -r["lr"]))
  best["selected"] = True
  return best


def run(
  config: default.Config, finetune: Callable[[str, float, int], dict[str, Any]]
) -> dict[str, Any]:
  """The Table 2 sweep (or one run): every optimizer over its learning rates.

  Args:
    config: with ``sweep``, every optimizer of ``sweep_optimizers`` at each of
      its learning rates (``lrs_for``) for ``epochs_for`` epochs; else one
      run of ``optimizer`` at ``lr`` for ``epochs``.
    finetune: ``(optimizer, lr, epochs) -> result`` of one run.

  Returns:
    ``{"runs", "selected" (per optimizer, the run with the best held-out
    CIFAR-100 accuracy; ties: the lower lr), "selection_metric"}``.
  """
  if config.sweep:
    plan = [
      (name, lr, config.epochs_for(name))
      for name in config.sweep_optimizers
      for lr in config.lrs_for(name)
    ]
  else:
    plan = [(config.optimizer, config.lr, config.epochs)]
  done = [finetune(name, lr, epochs) for name, lr, epochs in plan]
  selected = {}
  for name in dict.fromkeys(name for name, _, _ in plan):
    selected[name] = _select(config, [r for r in done if r["optimizer"] == name])
  results = {
    "runs": done,
    "selected": selected,
    "selection_metric": (
      "CIFAR-100 validation accuracy"
      if config.val_examples
      else "CIFAR-100 test accuracy (no validation split)"
    ),
  }
  return results


# ----------------------------------------------------------------------------
# The compute-matched frontier.
