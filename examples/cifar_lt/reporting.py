"""The frontier tables (beside GOODFIT's Table 2) and the trade-off plots."""

import pathlib
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from examples.cifar_lt import frontier
from examples.cifar_lt.configs import default

# GOODFIT Table 2 (ResNet-34, GLMC stage 1, full CIFAR-100-LT): LT accuracy (%)
# at base-class accuracy 40 / 35 / 30 %.
GOODFIT_TABLE2 = {
  2.0: {
    ("Baseline", "Head Only"): (16.99, 35.62, 54.26),
    ("GOODFIT", "Head Only"): (34.69, 48.06, 61.45),
    ("Baseline", "Full Model"): (27.49, 38.24, 49.19),
    ("GOODFIT", "Full Model"): (29.54, 43.76, 57.98),
  },
  5.0: {
    ("Baseline", "Head Only"): (20.02, 35.19, 50.36),
    ("GOODFIT", "Head Only"): (24.22, 37.43, 50.64),
    ("Baseline", "Full Model"): (20.89, 33.97, 47.03),
    ("GOODFIT", "Full Model"): (24.36, 35.72, 47.08),
  },
  10.0: {
    ("Baseline", "Head Only"): (9.56, 24.52, 39.48),
    ("GOODFIT", "Head Only"): (18.19, 33.33, 48.47),
    ("Baseline", "Full Model"): (6.47, 22.05, 37.63),
    ("GOODFIT", "Full Model"): (19.5, 30.14, 40.78),
  },
}


def _cell(mean: float | None, std: float | None, seeds: int) -> str:
  if mean is None:
    return "—"
  return f"{100 * mean:.1f} ± {100 * std:.1f}" if seeds > 1 else f"{100 * mean:.1f}"


def format_table(config: default.Config, entry: dict[str, Any]) -> str:
  """The markdown frontier table of one beta, GOODFIT's rows below ours.

  Args:
    config: supplies the thresholds and seeds.
    entry: one beta's results (``train_and_evaluate``'s ``betas`` values).

  Returns:
    The table.
  """
  beta = entry["beta"]
  table = entry["table"]
  stage1 = entry["stage1"]
  if config.relative_thresholds:
    heads = [
      f"LT @ base ≥ {100 * t:.0f}% of pre-trained ({100 * a:.1f}%)"
      for t, a in zip(config.thresholds, table["thresholds"], strict=True)
    ]
  else:
    heads = [f"LT Acc @ {100 * a:.0f}" for a in table["thresholds"]]
  sizes = entry["sizes"]
  lines = [
    f"beta = {beta:g}: stage 1 on {sizes['base_train']} images of classes "
    f"0-{100 - config.held_out_classes - 1}, pre-trained base-class accuracy "
    f"{100 * stage1['base_accuracy']:.1f}%; stage 2 on {sizes['held_out_train']} "
    f"images of classes {100 - config.held_out_classes}-99, "
    f"{config.budget_batches} batches of {config.batch_size} per run; held-out "
    f"(LT) test accuracy in %"
    + (f", mean ± std over seeds {list(config.seeds)}" if len(config.seeds) > 1 else "")
    + ".",
    "",
    "| family | " + " | ".join(heads) + " |",
    "|---" * (len(heads) + 1) + "|",
  ]
  for label, row in table["families"].items():
    cells = [
      _cell(m, s, len(config.seeds))
      for m, s in zip(row["mean"], row["std"], strict=True)
    ]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  goodfit = GOODFIT_TABLE2.get(float(beta))
  if goodfit:
    lines.append(
      "| *GOODFIT Table 2 (ResNet-34, GLMC, full data), LT Acc @ 40 / 35 / 30* |"
      + " |" * len(heads)
    )
    for (method, weights), values in goodfit.items():
      cells = [f"*{v:.2f}*" for v in values]
      cells += [""] * (len(heads) - len(cells))
      lines.append(
        f"| *{method}, {weights}* | " + " | ".join(cells[: len(heads)]) + " |"
      )
  return "\n".join(lines)


def format_tables(config: default.Config, per_beta: dict[str, Any]) -> str:
  """Every beta's :func:`format_table`, separated by blank lines."""
  return "\n\n".join(format_table(config, entry) for entry in per_beta.values())


def plot_tradeoff(
  config: default.Config, entry: dict[str, Any], path: pathlib.Path
) -> None:
  """Base vs held-out accuracy per family (GOODFIT Fig. 3a's form), seed 0.

  Each family's points are faint; its Pareto front (``frontier.pareto_front``)
  is the staircase, whose height at a base level is what the table reads there
  (the best LT accuracy at base accuracy >= that level). Dotted lines mark the
  table's thresholds.

  Args:
    config: supplies the thresholds and seeds.
    entry: one beta's results.
    path: the PNG to write.
  """

  opt = "SGD-m" if config.main_optimizer == "sgd" else "Adam"
  seed = config.seeds[0]
  fig, ax = plt.subplots(figsize=(7, 5))
  for i, (label, method, wise) in enumerate(frontier.FAMILIES):
    points = frontier.family_points(entry["runs"], method, wise, seed)
    if not points:
      continue
    color = f"C{i}"
    style = "--" if wise else "-"
    ax.scatter(
      [100 * b for b, _ in points],
      [100 * t for _, t in points],
      s=6,
      alpha=0.25,
      color=color,
    )
    front = frontier.pareto_front(points)
    ax.plot(
      [100 * b for b, _ in front],
      [100 * t for _, t in front],
      style,
      marker="o",
      ms=3,
      drawstyle="steps-post",  # what lt_at_threshold reads at each level
      color=color,
      label=label.format(opt=opt),
    )
  for level in entry["table"]["thresholds"]:
    ax.axvline(100 * level, color="gray", lw=0.8, ls=":")
  base = entry["stage1"]["base_accuracy"]
  ax.scatter(
    [100 * base],
    [100 * entry["stage1"]["lt_accuracy"]],
    marker="*",
    s=120,
    color="k",
    label="pre-trained",
    zorder=5,
  )
  ax.set_xlabel("base-class test accuracy (classes 0-89), %")
  ax.set_ylabel("held-out-class test accuracy (classes 90-99), %")
  ax.set_title(f"CIFAR-100-LT, beta = {entry['beta']:g}: {config.model}, seed {seed}")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
