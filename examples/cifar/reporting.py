"""Tables (markdown, in the form of the paper's Table 2) and learning curves."""

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

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
        "sgd": (24.49, 74.59), "adam": (34.64, 73.11),
        "lookahead": (26.10, 73.82), "adan": (35.17, 72.70),
        "profit": (35.26, 74.70),
    },
    "vit_tiny": {
        "sgd": (53.63, 61.98), "adam": (56.00, 58.99),
        "lookahead": (55.64, 61.35), "adan": (53.04, 61.62),
        "profit": (58.53, 62.20),
    },
    "vit_small": {
        "sgd": (57.93, 65.04), "adam": (58.60, 63.93),
        "lookahead": (57.81, 65.27), "adan": (53.85, 64.09),
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
    cells.append(f"{_pct(final['c10_test_accuracy'])} / {_pct(final['c100_test_accuracy'])}")
  pre = _pct(results["pretrain"]["c10_test_accuracy"])
  lines = [header, rule,
           f"| {model} (ours; pre-trained CIFAR-10 {pre}) | " + " | ".join(cells) + " |"]
  lines.append("| learning rate (selected) | " + " | ".join(
      f"{selected[o]['lr']:g}" for o in optimizers) + " |")
  if model in PAPER_TABLE_2:
    paper = PAPER_TABLE_2[model]
    lines.append(
        f"| {model} (paper; pre-trained {PAPER_PRETRAINED[model]:.2f}) | "
        + " | ".join(
            f"{paper[o][0]:.2f} / {paper[o][1]:.2f}" if o in paper else "-"
            for o in optimizers) + " |")
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
        f"{run['wall_s']:.0f} | {run.get('cpu_s', float('nan')):.0f} |")
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
    (line,) = ax_train.plot([h["epoch"] for h in trained],
                            [h["train_loss"] for h in trained], label=label)
    color = line.get_color()
    ax_loss.plot(epochs, [h["c100_test_loss"] for h in history], color=color,
                 label=f"{label} CIFAR-100")
    ax_loss.plot(epochs, [h["c10_test_loss"] for h in history], color=color,
                 linestyle="--", label=f"{label} CIFAR-10")
    ax_c100.plot(epochs, [100 * h["c100_test_accuracy"] for h in history],
                 color=color, label=f"{label} test")
    ax_c100.plot([h["epoch"] for h in trained],
                 [100 * h["train_accuracy"] for h in trained], color=color,
                 linestyle=":", label=f"{label} train")
    ax_c10.plot(epochs, [100 * h["c10_test_accuracy"] for h in history],
                color=color, label=label)
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


def plot_pretraining(history: Sequence[Mapping[str, Any]],
                     path: str | pathlib.Path) -> None:
  """CIFAR-10 pre-training curves (loss and accuracy per epoch).

  Args:
    history: per-epoch dicts of pre-training.
    path: the PNG to write.
  """
  trained = [h for h in history if h.get("train_loss") is not None]
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
  ax_loss.plot([h["epoch"] for h in trained], [h["train_loss"] for h in trained],
               label="train")
  ax_loss.plot([h["epoch"] for h in history], [h["c10_test_loss"] for h in history],
               label="test")
  ax_acc.plot([h["epoch"] for h in trained],
              [100 * h["train_accuracy"] for h in trained], label="train")
  ax_acc.plot([h["epoch"] for h in history],
              [100 * h["c10_test_accuracy"] for h in history], label="test")
  ax_loss.set_title("CIFAR-10 pre-training loss")
  ax_acc.set_title("CIFAR-10 pre-training accuracy (%)")
  for ax in (ax_loss, ax_acc):
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
