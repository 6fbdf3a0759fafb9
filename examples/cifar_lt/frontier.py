"""Family curves, GOODFIT's metric (the best LT accuracy among points with base
accuracy >= a threshold), the tables and the trade-off plots (README.md)."""

import pathlib
from collections.abc import Iterable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from examples.cifar_lt.configs import default
from examples.common import frontier

Point = tuple[float, float]  # (base_accuracy, lt_accuracy)
Run = dict[str, Any]  # a stage 2 run's result


def lt_at_threshold(points: Iterable[Point], threshold: float) -> float | None:
  """Best LT accuracy of points with base accuracy >= ``threshold`` (or None)."""
  best = frontier.select(points, threshold, old=lambda p: p[0], new=lambda p: p[1])
  return None if best is None else best[1]


def pareto_front(points: Iterable[Point]) -> list[Point]:
  """The distinct non-dominated points by decreasing base accuracy."""
  return frontier.pareto(set(points), x=lambda p: p[0], y=lambda p: p[1])


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


def optimizer_name(config: default.Config) -> str:
  return "SGD-m" if config.main_optimizer == "sgd" else "Adam"


def family_points(
  results: list[Run], method: str, wise: bool, seed: int
) -> list[Point]:
  """The points of one family and seed."""
  return [
    (p["base_accuracy"], p["lt_accuracy"])
    for r in results
    if r["method"] == method and r["seed"] == seed
    for p in ((r["wise"] or []) if wise else r["curve"])
  ]


def summarize(config: default.Config, results: list[Run], pretrained_base: float):
  """The table of one beta: ``{"thresholds" (absolute), "families": {label:
  {"per_seed", "mean", "std"}}}``, None where a family has no point."""
  relative = config.relative_thresholds
  levels = frontier.levels(config.thresholds, pretrained_base, relative)
  families = {}
  for label, method, wise in FAMILIES:
    if not any(r["method"] == method and (r["wise"] or not wise) for r in results):
      continue
    per_seed = [
      [lt_at_threshold(family_points(results, method, wise, seed), t) for t in levels]
      for seed in config.seeds
    ]
    columns = list(zip(*per_seed, strict=True))
    mean = [None if None in c else float(np.mean(c)) for c in columns]
    std = [None if None in c else float(np.std(c)) for c in columns]
    label = label.format(opt=optimizer_name(config))
    families[label] = {"per_seed": per_seed, "mean": mean, "std": std}
  return {"thresholds": levels, "families": families}


# GOODFIT Table 2 (ResNet-34, GLMC stage 1, full CIFAR-100-LT): per beta and row,
# LT accuracy (%) at base-class accuracy 40 / 35 / 30 %.
GOODFIT_TABLE2 = """
  2  | Baseline, Head Only  | 16.99 35.62 54.26
  2  | GOODFIT, Head Only   | 34.69 48.06 61.45
  2  | Baseline, Full Model | 27.49 38.24 49.19
  2  | GOODFIT, Full Model  | 29.54 43.76 57.98
  5  | Baseline, Head Only  | 20.02 35.19 50.36
  5  | GOODFIT, Head Only   | 24.22 37.43 50.64
  5  | Baseline, Full Model | 20.89 33.97 47.03
  5  | GOODFIT, Full Model  | 24.36 35.72 47.08
  10 | Baseline, Head Only  |  9.56 24.52 39.48
  10 | GOODFIT, Head Only   | 18.19 33.33 48.47
  10 | Baseline, Full Model |  6.47 22.05 37.63
  10 | GOODFIT, Full Model  | 19.50 30.14 40.78
"""


def _cell(mean: float | None, std: float | None, seeds: int) -> str:
  if mean is None:
    return "—"
  return f"{100 * mean:.1f} ± {100 * std:.1f}" if seeds > 1 else f"{100 * mean:.1f}"


def _row(cells: list[str]) -> str:
  return "| " + " | ".join(cells) + " |"


def format_table(config: default.Config, entry: dict[str, Any]) -> str:
  """The markdown table of one beta's results, GOODFIT's rows below ours."""
  table, sizes, seeds = entry["table"], entry["sizes"], config.seeds
  if config.relative_thresholds:
    heads = [
      f"LT @ base ≥ {100 * t:.0f}% of pre-trained ({100 * a:.1f}%)"
      for t, a in zip(config.thresholds, table["thresholds"], strict=True)
    ]
  else:
    heads = [f"LT Acc @ {100 * a:.0f}" for a in table["thresholds"]]
  num_base = 100 - config.held_out_classes
  lines = [
    f"beta = {entry['beta']:g}: stage 1 on {sizes['base_train']} images of classes "
    f"0-{num_base - 1}, pre-trained base-class accuracy "
    f"{100 * entry['stage1']['base_accuracy']:.1f}%; stage 2 on "
    f"{sizes['held_out_train']} images of classes {num_base}-99, "
    f"{config.budget_batches} batches of {config.batch_size} per run; held-out "
    f"(LT) test accuracy in %"
    + (f", mean ± std over seeds {list(seeds)}" if len(seeds) > 1 else "")
    + ".",
    "",
    _row(["family", *heads]),
    "|---" * (len(heads) + 1) + "|",
  ]
  for label, row in table["families"].items():
    values = zip(row["mean"], row["std"], strict=True)
    lines.append(_row([label, *(_cell(m, s, len(seeds)) for m, s in values)]))
  rows = [line.split("|") for line in GOODFIT_TABLE2.strip().splitlines()]
  goodfit = [(r[1].strip(), r[2].split()) for r in rows if float(r[0]) == entry["beta"]]
  if goodfit:
    title = "*GOODFIT Table 2 (ResNet-34, GLMC, full data), LT Acc @ 40 / 35 / 30*"
    lines.append(f"| {title} |" + " |" * len(heads))
    for row, values in goodfit:
      cells = [f"*{float(v):.2f}*" for v in values] + [""] * (len(heads) - len(values))
      lines.append(_row([f"*{row}*", *cells[: len(heads)]]))
  return "\n".join(lines)


def plot_tradeoff(config: default.Config, entry: dict[str, Any], path: pathlib.Path):
  """Base vs held-out accuracy per family (GOODFIT Fig. 3a's form), seed 0.

  Each family's points are faint; its Pareto front is the staircase whose height
  at a base level is what the table reads there. Dotted: the thresholds.
  """
  seed = config.seeds[0]
  fig, ax = plt.subplots(figsize=(7, 5))
  for i, (label, method, wise) in enumerate(FAMILIES):
    points = family_points(entry["runs"], method, wise, seed)
    if not points:
      continue
    ax.scatter(*100 * np.array(points).T, s=6, alpha=0.25, color=f"C{i}")
    # The staircase is what lt_at_threshold reads at each level.
    line = dict(marker="o", ms=3, drawstyle="steps-post", color=f"C{i}")
    label = label.format(opt=optimizer_name(config))
    front = 100 * np.array(pareto_front(points)).T
    ax.plot(*front, "--" if wise else "-", **line, label=label)
  for level in entry["table"]["thresholds"]:
    ax.axvline(100 * level, color="gray", lw=0.8, ls=":")
  base, lt = (100 * entry["stage1"][k] for k in ("base_accuracy", "lt_accuracy"))
  ax.scatter([base], [lt], marker="*", s=120, color="k", label="pre-trained", zorder=5)
  ax.set_xlabel("base-class test accuracy (classes 0-89), %")
  ax.set_ylabel("held-out-class test accuracy (classes 90-99), %")
  ax.set_title(f"CIFAR-100-LT, beta = {entry['beta']:g}: {config.model}, seed {seed}")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
