"""The retention/transfer plot of the sharded fine-tuning example."""

import pathlib
from collections.abc import Mapping
from typing import Any


def plot_tradeoff(results: Mapping[str, Any], path: pathlib.Path) -> None:
  """Old- vs new-domain validation loss along every fine-tuning run.

  Two panels: every point, and a zoom on the pre-trained model and the AdamW
  runs (a diverging run would otherwise squash the interesting region).

  Args:
    results: the results dict of ``train.train_and_evaluate``.
    path: the PNG file to write.
  """
  import matplotlib  # Lazily: slow to import, and only process 0 plots.

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(12, 5))
  colors = {"adamw": plt.cm.Blues, "profit": plt.cm.Oranges}
  runs = results["finetune"]
  pre = results["pretrained"]
  for ax in axes:
    for method, cmap in colors.items():
      mine = [r for r in runs if r["method"] == method]
      for i, run in enumerate(mine):
        hist = run["history"]
        ax.plot(
          [h["new"] for h in hist],
          [h["old"] for h in hist],
          "o-",
          ms=3,
          color=cmap(0.45 + 0.5 * (i + 1) / (len(mine) + 1)),
          label=f"{method} lr={run['lr']:g}",
        )
        ax.plot(
          [hist[-1]["new"]],
          [hist[-1]["old"]],
          "s",
          ms=6,
          color=ax.lines[-1].get_color(),
        )
    ax.plot([pre["new"]], [pre["old"]], "k*", ms=12, label="pre-trained")
    ax.set_xlabel("new-domain validation loss (nats/byte): transfer")
    ax.set_ylabel("old-domain validation loss (nats/byte): retention")
    ax.grid(alpha=0.3)
  axes[0].set_title("Fine-tuning trajectories (lower left is better)")
  axes[0].legend(fontsize=8)
  zoom = [(pre["new"], pre["old"])] + [
    (h["new"], h["old"]) for r in runs if r["method"] == "adamw" for h in r["history"]
  ]
  xs, ys = zip(*zoom, strict=True)
  pad_x = 0.15 * (max(xs) - min(xs) or 0.05)
  pad_y = 0.15 * (max(ys) - min(ys) or 0.05)
  axes[1].set_xlim(min(xs) - pad_x, max(xs) + pad_x)
  axes[1].set_ylim(min(ys) - pad_y, max(ys) + pad_y)
  axes[1].set_title("Zoom on the AdamW runs (squares: end of each run)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
