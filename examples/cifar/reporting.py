"""Tables (markdown, in the form of the paper's Table 2) and figures."""

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from examples.cifar import frontier
from examples.common import runs

NAMES = dict(
  sgd="SGD", adam="Adam", lookahead="Lookahead", adan="Adan", profit="PROFIT"
)
# The paper's Table 2: (CIFAR-10, CIFAR-100) test % after fine-tuning, per
# optimizer in the order of NAMES.
PAPER_TABLE_2 = {
  model: dict(zip(NAMES, zip(row[::2], row[1::2], strict=True), strict=True))
  for model, row in {
    "resnet18": (24.49, 74.59, 34.64, 73.11, 26.10, 73.82, 35.17, 72.70, 35.26, 74.70),
    "vit_tiny": (53.63, 61.98, 56.00, 58.99, 55.64, 61.35, 53.04, 61.62, 58.53, 62.20),
    "vit_small": (57.93, 65.04, 58.60, 63.93, 57.81, 65.27, 53.85, 64.09, 59.02, 65.44),
  }.items()
}
# Table 6: CIFAR-10 accuracy of the pre-trained models.
PAPER_PRETRAINED = {"resnet18": 91.06, "vit_tiny": 82.38, "vit_small": 83.86}
# plot_curves' lines: (panel, key, scale, label, style); the first sets the color.
_CURVES = (
  (0, "train_loss", 1, "", {}),
  (1, "c100_test_loss", 1, " CIFAR-100", {}),
  (1, "c10_test_loss", 1, " CIFAR-10", {"linestyle": "--"}),
  (2, "c100_test_accuracy", 100, " test", {}),
  (2, "train_accuracy", 100, " train", {"linestyle": ":"}),
  (3, "c10_test_accuracy", 100, "", {}),
)
_CURVE_TITLES = (
  "CIFAR-100 training loss (augmented batches)",
  "test loss: CIFAR-100 (solid), CIFAR-10 frozen head (dashed)",
  "CIFAR-100 accuracy (%): test (solid), train (dotted)",
  "CIFAR-10 test accuracy (%), frozen CIFAR-10 head",
)


def _pct(x: float) -> str:
  return f"{100 * x:.2f}"


def _row(cells: Sequence[str]) -> str:
  return "| " + " | ".join(cells) + " |"


def format_table(results: Mapping[str, Any]) -> str:
  """Table 2's form: CIFAR-10 / CIFAR-100 test % at the selected lrs, the paper's."""
  model, selected = results["config"]["model"], results["selected"]
  finals = [selected[o]["final"] for o in selected]
  pre = _pct(results["pretrain"]["c10_test_accuracy"])
  lines = [
    _row(["Backbone", *(NAMES[o] for o in selected)]),
    "|---" * (len(selected) + 1) + "|",
    _row(
      [f"{model} (ours; pre-trained CIFAR-10 {pre})"]
      + [
        f"{_pct(f['c10_test_accuracy'])} / {_pct(f['c100_test_accuracy'])}"
        for f in finals
      ]
    ),
    _row(["learning rate (selected)", *(f"{selected[o]['lr']:g}" for o in selected)]),
  ]
  if model in PAPER_TABLE_2:
    paper = PAPER_TABLE_2[model]
    cells = [
      f"{paper[o][0]:.2f} / {paper[o][1]:.2f}" if o in paper else "-" for o in selected
    ]
    head = f"{model} (paper; pre-trained {PAPER_PRETRAINED[model]:.2f})"
    lines.append(_row([head, *cells]))
  return "\n".join(lines)


def format_runs(runs: Sequence[Mapping[str, Any]]) -> str:
  """Markdown, a row per fine-tuning run: accuracies (%) and cost."""
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


def _save(fig: Any, path: str | pathlib.Path) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _curve(ax: Any, history: Sequence[Mapping], key: str, scale: float, **kwargs):
  return ax.plot(
    [h["epoch"] for h in history], [scale * h[key] for h in history], **kwargs
  )


def plot_curves(runs: Sequence[Mapping], path, title: str = "") -> None:
  """Learning curves per epoch of runs with a ``history`` (as the paper's Fig. 4)."""
  fig, axes = plt.subplots(2, 2, figsize=(11, 8))
  panels = axes.ravel()
  for run in runs:
    label = f"{NAMES.get(run['optimizer'], run['optimizer'])} lr={run['lr']:g}"
    history = run["history"]
    trained = [h for h in history if h.get("train_loss") is not None]
    color = {}
    for panel, key, scale, suffix, style in _CURVES:
      points = trained if key.startswith("train_") else history
      kwargs = {**color, "label": label + suffix, **style}
      (line,) = _curve(panels[panel], points, key, scale, **kwargs)
      color = {"color": line.get_color()}
  for ax, panel_title in zip(panels, _CURVE_TITLES, strict=True):
    ax.set_title(panel_title)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  panels[0].legend(fontsize=7)
  panels[3].legend(fontsize=7)
  if title:
    fig.suptitle(title)
  _save(fig, path)


def plot_pretraining(history: Sequence[Mapping], path) -> None:
  """CIFAR-10 pre-training curves: loss and accuracy per epoch."""
  trained = [h for h in history if h.get("train_loss") is not None]
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, key, scale, title in (
    (axes[0], "loss", 1, "CIFAR-10 pre-training loss"),
    (axes[1], "accuracy", 100, "CIFAR-10 pre-training accuracy (%)"),
  ):
    _curve(ax, trained, f"train_{key}", scale, label="train")
    _curve(ax, history, f"c10_test_{key}", scale, label="test")
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend()
  _save(fig, path)


def format_study(study, levels: Sequence[float], by_batch_size: Mapping) -> str:
  """The batch-size study (CIFAR-100 test % per seed), then PROFIT's diagnostics."""
  head = " | ".join(f"CIFAR-10 >= {100 * level:g}%" for level in levels)
  lines = [f"| batch size | family | {head} |", "|---" * (len(levels) + 2) + "|"]
  cells: dict[tuple[int, str], dict[float, Any]] = {}
  for row in study:
    cells.setdefault((row["batch_size"], row["family"]), {})[row["level"]] = row
  for (batch_size, family), by_level in cells.items():
    news = [by_level[level]["new_test"] for level in levels]
    values = ["-" if None in new else " / ".join(_pct(v) for v in new) for new in news]
    lines.append(_row([str(batch_size), family, *values]))
  lines += [
    "",
    "| batch size | PROFIT run | projected | removed fraction | cosine(g, delta) |",
    "|---|---|---|---|---|",
  ]
  for batch_size, entry in sorted(by_batch_size.items()):
    for run in entry["mechanism"]["profit_runs"]:
      lines.append(
        f"| {batch_size} | lr {run['lr']:g}, ratio {run['ratio']:g}, "
        f"seed {run['seed']} | {run['mean_projected_fraction']:.2f} | "
        f"{run['mean_removed_fraction']:.3f} | {run['mean_cosine']:.3f} |"
      )
  return "\n".join(lines)


def _plot_front(ax: Any, front: Sequence[Mapping[str, Any]], *args, **kwargs) -> Any:
  """Draws points at their test accuracies (%): CIFAR-10 across, CIFAR-100 up."""
  olds = [100 * p["old_test"] for p in front]
  return ax.plot(olds, [100 * p["new_test"] for p in front], *args, **kwargs)


def plot_frontier(results: Mapping[str, Any], path: str | pathlib.Path) -> None:
  """Old-vs-new test accuracy of every family (first seed; fronts on validation),
  the full FT and PROFIT fronts per batch size, and PROFIT's removed fraction.
  """
  config = results["config"]
  main_size = config["batch_size"]
  by_size = {int(k): v for k, v in results["frontier"].items()}
  fig, (ax, ax_bs, ax_mech) = plt.subplots(1, 3, figsize=(18, 5.5))
  for family, by_seed in by_size[main_size]["families"].items():
    points = next(iter(by_seed.values()))
    (line,) = _plot_front(ax, points, ".", alpha=0.15)
    front = frontier.pareto(points)
    _plot_front(ax, front, "-o", color=line.get_color(), markersize=3, label=family)
  test_base = results["pretrain"]["c10_test_accuracy"]
  for level in config["levels"]:
    ax.axvline(100 * level * test_base, color="gray", linestyle=":", linewidth=0.8)
  ax.set_title(
    f"batch size {main_size}: every family, seed {config['seeds'][0]} "
    "(dotted: 95/90/80/70% of pre-trained)",
    fontsize=9,
  )
  for batch_size, entry in sorted(by_size.items()):
    for family, style in (("full FT", "--"), ("PROFIT", "-")):
      if family not in entry["families"]:
        continue
      seed = sorted(entry["families"][family])[0]
      front = frontier.pareto(entry["families"][family][seed])
      label = f"{family}, batch {batch_size}"
      _plot_front(ax_bs, front, style, marker="o", markersize=3, label=label)
    for run in entry["mechanism"]["profit_runs"]:
      label = f"batch {batch_size}, lr {run['lr']:g}, seed {run['seed']}"
      ax_mech.plot(run["batches_seen"], run["removed_fraction"], label=label)
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
  _save(fig, path)


def write_results(config: Any, workdir: pathlib.Path, results: dict[str, Any]) -> None:
  """Writes the JSON, the markdown tables and the figure (``frontier`` picks which)."""
  stem, md, second = ("results", "table", "runs_table")
  if config.frontier:
    stem, md, second = ("frontier", "frontier", "study_table")
  runs.write_json(workdir / f"{stem}.json", results)
  (workdir / f"{md}.md").write_text(results["table"] + "\n\n" + results[second] + "\n")
  if config.frontier:
    plot_frontier(results, workdir / "frontier.png")
  else:
    title = f"{config.model}: CIFAR-10 -> CIFAR-100 fine-tuning"
    plot_curves(list(results["selected"].values()), workdir / "curves.png", title=title)
