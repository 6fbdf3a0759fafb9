"""Tables (markdown, in the form of the paper's Table 2) and learning curves."""

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from examples.common import runs

NAMES = {
  "sgd": "SGD",
  "adam": "Adam",
  "lookahead": "Lookahead",
  "adan": "Adan",
  "profit": "PROFIT",
}

# Table 2 of the paper: CIFAR-10 / CIFAR-100 accuracy (%) after fine-tuning.
PAPER_TABLE_2 = {
  "resnet18": {
    "sgd": (24.49, 74.59),
    "adam": (34.64, 73.11),
    "lookahead": (26.10, 73.82),
    "adan": (35.17, 72.70),
    "profit": (35.26, 74.70),
  },
  "vit_tiny": {
    "sgd": (53.63, 61.98),
    "adam": (56.00, 58.99),
    "lookahead": (55.64, 61.35),
    "adan": (53.04, 61.62),
    "profit": (58.53, 62.20),
  },
  "vit_small": {
    "sgd": (57.93, 65.04),
    "adam": (58.60, 63.93),
    "lookahead": (57.81, 65.27),
    "adan": (53.85, 64.09),
    "profit": (59.02, 65.44),
  },
}
# Table 6: CIFAR-10 accuracy of the pre-trained models.
PAPER_PRETRAINED = {"resnet18": 91.06, "vit_tiny": 82.38, "vit_small": 83.86}


def _pct(x: float) -> str:
  return f"{100 * x:.2f}"


def format_table(results: Mapping[str, Any]) -> str:
  """Table 2's form: CIFAR-10 / CIFAR-100 test accuracy per optimizer.

  Args:
    results: the dict returned by ``train.train_and_evaluate``.

  Returns:
    Markdown: the table at each optimizer's selected learning rate, then a
    row with those learning rates and the paper's row for the same backbone
    when there is one.
  """
  model = results["config"]["model"]
  selected = results["selected"]
  optimizers = list(selected)
  header = "| Backbone | " + " | ".join(NAMES[o] for o in optimizers) + " |"
  rule = "|---" * (len(optimizers) + 1) + "|"
  cells = []
  for name in optimizers:
    final = selected[name]["final"]
    cells.append(
      f"{_pct(final['c10_test_accuracy'])} / {_pct(final['c100_test_accuracy'])}"
    )
  pre = _pct(results["pretrain"]["c10_test_accuracy"])
  lines = [
    header,
    rule,
    f"| {model} (ours; pre-trained CIFAR-10 {pre}) | " + " | ".join(cells) + " |",
  ]
  lines.append(
    "| learning rate (selected) | "
    + " | ".join(f"{selected[o]['lr']:g}" for o in optimizers)
    + " |"
  )
  if model in PAPER_TABLE_2:
    paper = PAPER_TABLE_2[model]
    lines.append(
      f"| {model} (paper; pre-trained {PAPER_PRETRAINED[model]:.2f}) | "
      + " | ".join(
        f"{paper[o][0]:.2f} / {paper[o][1]:.2f}" if o in paper else "-"
        for o in optimizers
      )
      + " |"
    )
  return "\n".join(lines)


def format_runs(runs: Sequence[Mapping[str, Any]]) -> str:
  """Every fine-tuning run of a sweep: accuracies (%) and cost.

  Args:
    runs: the ``runs`` list of the results.

  Returns:
    A markdown table, one row per (optimizer, learning rate).
  """
  lines = [
    "| optimizer | lr | epochs | batches | main steps | CIFAR-10 test | "
    "CIFAR-100 test | CIFAR-100 val | selected | wall (s) | CPU (s) |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for run in runs:
    final = run["final"]
    val = final.get("c100_val_accuracy")
    lines.append(
      f"| {NAMES[run['optimizer']]} | {run['lr']:g} | {run['epochs']} | "
      f"{run['batches_seen']} | {run['main_steps']} | "
      f"{_pct(final['c10_test_accuracy'])} | {_pct(final['c100_test_accuracy'])} | "
      f"{'-' if val is None else _pct(val)} | {'yes' if run.get('selected') else ''} | "
      f"{run['wall_s']:.0f} | {run.get('cpu_s', float('nan')):.0f} |"
    )
  return "\n".join(lines)


def plot_curves(
  runs: Sequence[Mapping[str, Any]], path: str | pathlib.Path, title: str = ""
) -> None:
  """Learning curves per epoch, like the paper's Fig. 4.

  Four panels: CIFAR-100 training loss; test losses (CIFAR-100 with the new
  head, CIFAR-10 with the frozen head); CIFAR-100 accuracy (train and test);
  CIFAR-10 test accuracy. Epoch 0 is the model before fine-tuning.

  Args:
    runs: runs with a ``history`` list of per-epoch dicts.
    path: the PNG to write.
    title: the figure's title.
  """
  fig, axes = plt.subplots(2, 2, figsize=(11, 8))
  (ax_train, ax_loss), (ax_c100, ax_c10) = axes
  for run in runs:
    label = f"{NAMES.get(run['optimizer'], run['optimizer'])} lr={run['lr']:g}"
    history = run["history"]
    epochs = [h["epoch"] for h in history]
    trained = [h for h in history if h.get("train_loss") is not None]
    (line,) = ax_train.plot(
      [h["epoch"] for h in trained], [h["train_loss"] for h in trained], label=label
    )
    color = line.get_color()
    ax_loss.plot(
      epochs,
      [h["c100_test_loss"] for h in history],
      color=color,
      label=f"{label} CIFAR-100",
    )
    ax_loss.plot(
      epochs,
      [h["c10_test_loss"] for h in history],
      color=color,
      linestyle="--",
      label=f"{label} CIFAR-10",
    )
    ax_c100.plot(
      epochs,
      [100 * h["c100_test_accuracy"] for h in history],
      color=color,
      label=f"{label} test",
    )
    ax_c100.plot(
      [h["epoch"] for h in trained],
      [100 * h["train_accuracy"] for h in trained],
      color=color,
      linestyle=":",
      label=f"{label} train",
    )
    ax_c10.plot(
      epochs, [100 * h["c10_test_accuracy"] for h in history], color=color, label=label
    )
  ax_train.set_title("CIFAR-100 training loss (augmented batches)")
  ax_loss.set_title("test loss: CIFAR-100 (solid), CIFAR-10 frozen head (dashed)")
  ax_c100.set_title("CIFAR-100 accuracy (%): test (solid), train (dotted)")
  ax_c10.set_title("CIFAR-10 test accuracy (%), frozen CIFAR-10 head")
  for ax in axes.flat:
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  ax_train.legend(fontsize=7)
  ax_c10.legend(fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_pretraining(
  history: Sequence[Mapping[str, Any]], path: str | pathlib.Path
) -> None:
  """CIFAR-10 pre-training curves (loss and accuracy per epoch).

  Args:
    history: per-epoch dicts of pre-training.
    path: the PNG to write.
  """
  trained = [h for h in history if h.get("train_loss") is not None]
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
  ax_loss.plot(
    [h["epoch"] for h in trained], [h["train_loss"] for h in trained], label="train"
  )
  ax_loss.plot(
    [h["epoch"] for h in history], [h["c10_test_loss"] for h in history], label="test"
  )
  ax_acc.plot(
    [h["epoch"] for h in trained],
    [100 * h["train_accuracy"] for h in trained],
    label="train",
  )
  ax_acc.plot(
    [h["epoch"] for h in history],
    [100 * h["c10_test_accuracy"] for h in history],
    label="test",
  )
  ax_loss.set_title("CIFAR-10 pre-training loss")
  ax_acc.set_title("CIFAR-10 pre-training accuracy (%)")
  for ax in (ax_loss, ax_acc):
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def format_study(
  study: Sequence[Mapping[str, Any]],
  levels: Sequence[float],
  by_batch_size: Mapping[int, Mapping[str, Any]],
) -> str:
  """The batch-size study: the frontier table per batch size, and PROFIT's diagnostics.

  Args:
    study: rows of ``frontier.table`` with a ``batch_size`` key.
    levels: the levels, in column order.
    by_batch_size: ``{batch_size: {"mechanism": {"profit_runs": [...]}}}``.

  Returns:
    Markdown: one row per (batch size, family) with the CIFAR-100 test
    accuracy (%) at each CIFAR-10 level, then one row per PROFIT run with its
    mean projected fraction, removed fraction and cosine(g, delta).
  """
  head = " | ".join(f"CIFAR-10 >= {100 * level:g}%" for level in levels)
  lines = [f"| batch size | family | {head} |", "|---" * (len(levels) + 2) + "|"]
  cells: dict[tuple[int, str], dict[float, Any]] = {}
  for row in study:
    cells.setdefault((row["batch_size"], row["family"]), {})[row["level"]] = row
  for (batch_size, family), by_level in cells.items():
    values = []
    for level in levels:
      new = by_level[level]["new_test"]
      values.append("-" if None in new else " / ".join(_pct(v) for v in new))
    lines.append(f"| {batch_size} | {family} | " + " | ".join(values) + " |")
  lines += [
    "",
    "| batch size | PROFIT run | projected | removed fraction | cosine(g, delta) |",
    "|---|---|---|---|---|",
  ]
  for batch_size, entry in sorted(by_batch_size.items()):
    for run in entry["mechanism"]["profit_runs"]:
      lines.append(
        f"| {batch_size} | lr {run['lr']:g}, ratio {run['ratio']:g}, "
        f"seed {run['seed']} | "
        f"{run['mean_projected_fraction']:.2f} | "
        f"{run['mean_removed_fraction']:.3f} | {run['mean_cosine']:.3f} |"
      )
  return "\n".join(lines)


def plot_frontier(results: Mapping[str, Any], path: str | pathlib.Path) -> None:
  """Old-vs-new accuracy of every family, and PROFIT's diagnostics.

  Left panel: CIFAR-10 vs CIFAR-100 test accuracy at the main batch size,
  each family's points (first seed, faint) and its frontier (the points no
  other point of the family beats on both validation accuracies, drawn at
  their test accuracies), the levels of the pre-trained model's CIFAR-10
  test accuracy dotted. Middle
  panel: the full fine-tuning and PROFIT frontiers per batch size. Right
  panel: PROFIT's removed fraction ``||g - g'|| / ||g||`` along training
  (batches seen), per batch size.

  Args:
    results: the frontier results of ``train.train_and_evaluate``.
    path: the PNG to write.
  """
  from examples.cifar import frontier  # pylint: disable=g-import-not-at-top

  main_size = results["config"]["batch_size"]
  by_size = {int(k): v for k, v in results["frontier"].items()}
  fig, (ax, ax_bs, ax_mech) = plt.subplots(1, 3, figsize=(18, 5.5))
  for family, by_seed in by_size[main_size]["families"].items():
    points = next(iter(by_seed.values()))
    (line,) = ax.plot(
      [100 * p["old_test"] for p in points],
      [100 * p["new_test"] for p in points],
      ".",
      alpha=0.15,
    )
    front = frontier.pareto(points)
    ax.plot(
      [100 * p["old_test"] for p in front],
      [100 * p["new_test"] for p in front],
      "-o",
      color=line.get_color(),
      markersize=3,
      label=family,
    )
  test_base = results["pretrain"]["c10_test_accuracy"]
  for level in results["config"]["levels"]:
    ax.axvline(100 * level * test_base, color="gray", linestyle=":", linewidth=0.8)
  ax.set_title(
    f"batch size {main_size}: every family, seed {results['config']['seeds'][0]} "
    "(dotted: 95/90/80/70% of pre-trained)",
    fontsize=9,
  )
  markers = {"full FT": "--", "PROFIT": "-"}
  for batch_size, entry in sorted(by_size.items()):
    for family, style in markers.items():
      if family not in entry["families"]:
        continue
      seed = sorted(entry["families"][family])[0]
      front = frontier.pareto(entry["families"][family][seed])
      ax_bs.plot(
        [100 * p["old_test"] for p in front],
        [100 * p["new_test"] for p in front],
        style,
        marker="o",
        markersize=3,
        label=f"{family}, batch {batch_size}",
      )
    for run in entry["mechanism"]["profit_runs"]:
      ax_mech.plot(
        run["batches_seen"],
        run["removed_fraction"],
        label=f"batch {batch_size}, lr {run['lr']:g}, seed {run['seed']}",
      )
  ax_bs.set_title("full FT (dashed) and PROFIT (solid) fronts per batch size")
  ax_mech.set_title("PROFIT: removed fraction ||g - g'|| / ||g|| (mean per eval)")
  ax_mech.set_xlabel("batches seen")
  ax_mech.set_xscale("log")
  for axis in (ax, ax_bs):
    axis.set_xlabel("CIFAR-10 test accuracy (%), frozen CIFAR-10 head")
    axis.set_ylabel("CIFAR-100 test accuracy (%)")
  for axis in (ax, ax_bs, ax_mech):
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_results(config: Any, workdir: pathlib.Path, results: dict[str, Any]) -> None:
  """Writes a command's results: JSON, the Markdown tables and the figure.

  Args:
    config: the configuration (``frontier`` picks the files).
    workdir: the output folder.
    results: from ``train.train_and_evaluate``.
  """
  if config.frontier:
    runs.write_json(workdir / "frontier.json", results)
    (workdir / "frontier.md").write_text(
      results["table"] + "\n\n" + results["study_table"] + "\n"
    )
    plot_frontier(results, workdir / "frontier.png")
    return
  runs.write_json(workdir / "results.json", results)
  (workdir / "table.md").write_text(
    results["table"] + "\n\n" + results["runs_table"] + "\n"
  )
  plot_curves(
    list(results["selected"].values()),
    workdir / "curves.png",
    title=f"{config.model}: CIFAR-10 -> CIFAR-100 fine-tuning",
  )
