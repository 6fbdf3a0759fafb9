"""The trade-off curve and GOODFIT's metric: held-out accuracy at a base level.

A *point* is one evaluated model: its base-class accuracy (classes 0-89) and
its held-out-class ("LT") accuracy (classes 90-99). A method family's curve
is the union of its points: every evaluation along training (every
``eval_points`` of batches seen, batch 0 included) of every run of the family
(its learning rates, its L2-SP strengths), or every mixing coefficient of
WiSE-FT over the family's fine-tuned runs. GOODFIT's Table 2 reads LT accuracy
"when the base class accuracy is 40 %": here the **best LT accuracy among the
family's points whose base accuracy is at least the threshold** (no
interpolation), the same rule for every family.

Example:
  >>> points = [(0.5, 0.0), (0.45, 0.2), (0.3, 0.6)]
  >>> lt_at_threshold(points, 0.4)
  0.2
"""

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from examples.cifar_lt.configs import default
from examples.common import frontier


def lt_at_threshold(
  points: Iterable[tuple[float, float]], threshold: float
) -> float | None:
  """Best LT accuracy among points with base accuracy >= ``threshold``.

  The rule of ``examples.common.frontier.select`` (with its tolerance, so that
  a threshold computed as a product, e.g. 0.9 * base accuracy, cannot drop an
  exact tie by rounding).

  Args:
    points: ``(base_accuracy, lt_accuracy)`` pairs.
    threshold: the base-accuracy level.

  Returns:
    The best LT accuracy, or None if no point reaches the threshold.
  """
  best = frontier.select(points, threshold, old=lambda p: p[0], new=lambda p: p[1])
  return None if best is None else best[1]


def pareto_front(
  points: Iterable[tuple[float, float]],
) -> list[tuple[float, float]]:
  """The points no other point beats on both accuracies, by falling base.

  Args:
    points: ``(base_accuracy, lt_accuracy)`` pairs.

  Returns:
    The distinct non-dominated points sorted by decreasing base accuracy (and
    so increasing LT accuracy): the curve that :func:`lt_at_threshold` reads.
  """
  return frontier.pareto(set(points), x=lambda p: p[0], y=lambda p: p[1])


def thresholds_for(
  thresholds: Sequence[float], pretrained_base: float, relative: bool
) -> list[float]:
  """The absolute base-accuracy levels of a table.

  Args:
    thresholds: fractions (GOODFIT's 0.40 / 0.35 / 0.30, or 0.9 / 0.8 / 0.7
      of the pre-trained base accuracy).
    pretrained_base: the pre-trained model's base-class accuracy.
    relative: whether ``thresholds`` are fractions of ``pretrained_base``.

  Returns:
    The levels, as accuracies.
  """
  return frontier.levels(thresholds, pretrained_base, relative)


# The families of the table and the plot: (label, method, WiSE-FT of it).
FAMILIES = (
  ("head, {opt}", "head", False),
  ("head, PROFIT({opt})", "head_profit", False),
  ("full, {opt}", "full", False),
  ("full, PROFIT({opt})", "full_profit", False),
  ("full, L2-SP", "l2sp", False),
  ("WiSE-FT of full {opt}", "full", True),
  ("WiSE-FT of full PROFIT", "full_profit", True),
)


def family_points(
  results: list[dict[str, Any]], method: str, wise: bool, seed: int
) -> list[tuple[float, float]]:
  """``(base, lt)`` points of one family and seed (see ``frontier.py``)."""
  points = []
  for r in results:
    if r["method"] != method or r["seed"] != seed:
      continue
    for p in (r["wise"] or []) if wise else r["curve"]:
      points.append((p["base_accuracy"], p["lt_accuracy"]))
  return points


def summarize(
  config: default.Config, results: list[dict[str, Any]], pretrained_base: float
) -> dict[str, Any]:
  """The frontier table of one beta: LT accuracy per family and threshold.

  Args:
    config: supplies the thresholds, seeds and the main optimizer's name.
    results: the stage 2 runs.
    pretrained_base: the stage 1 model's base-class accuracy.

  Returns:
    ``{"thresholds" (absolute levels), "families": {label: {"per_seed",
    "mean", "std"}}}``; a value is None where a family has no point at the
    threshold.
  """
  levels = thresholds_for(
    config.thresholds, pretrained_base, config.relative_thresholds
  )
  opt = "SGD-m" if config.main_optimizer == "sgd" else "Adam"
  families = {}
  for label, method, wise in FAMILIES:
    if not any(r["method"] == method and (r["wise"] or not wise) for r in results):
      continue
    per_seed = []
    for seed in config.seeds:
      points = family_points(results, method, wise, seed)
      per_seed.append([lt_at_threshold(points, t) for t in levels])
    columns = list(zip(*per_seed, strict=True))
    mean = [None if None in c else float(np.mean(c)) for c in columns]
    std = [None if None in c else float(np.std(c)) for c in columns]
    families[label.format(opt=opt)] = {"per_seed": per_seed, "mean": mean, "std": std}
  return {"thresholds": levels, "families": families}
