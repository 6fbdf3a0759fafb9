"""Figures of the toy example: predictions (paper Fig. 3) and trade-offs."""

import pathlib
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from examples.toy_regression import input_pipeline

PREDICTION_TITLES = {
  "baseline": "Trained on original data",
  "head": "Fine-tune, head only",
  "full": "Fine-tune, full model",
  "profit_cycles": "PROFIT (cycles)",
  "profit_batches": "PROFIT (batches, compute-matched)",
}


def plot_extent(config: Any) -> tuple[float, float]:
  """The square ``[low, high]^2`` covering both domains."""
  low = min(config.old_domain[0], config.new_domain[0])
  high = max(config.old_domain[1], config.new_domain[1])
  return low, high


def make_grid(config: Any) -> np.ndarray:
  """``plot_grid ** 2`` points covering both domains, float32 ``[n, 2]``.

  Row ``i``, column ``j`` of the image is point ``i * plot_grid + j`` with
  ``x1`` increasing along columns and ``x2`` along rows.
  """
  low, high = plot_extent(config)
  axis = np.linspace(low, high, config.plot_grid, dtype=np.float32)
  x1, x2 = np.meshgrid(axis, axis)
  return np.stack([x1.ravel(), x2.ravel()], axis=-1)


def _in_domain(grid: np.ndarray, domain: tuple[float, float]) -> np.ndarray:
  low, high = domain
  return np.all((grid >= low) & (grid <= high), axis=-1)


def _image(values: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
  return np.where(mask, values, np.nan).reshape(size, size)


def plot_predictions(
  results: dict,
  predictions: dict[str, np.ndarray],
  grid: np.ndarray,
  config: Any,
  path: pathlib.Path,
) -> None:
  """Ground truth (original, new, combined) and each method's predictions.

  Args:
    results: the results dict (for the errors in the titles).
    predictions: table row -> predictions on ``grid`` (first seed).
    grid: from :func:`make_grid`.
    config: the configuration.
    path: PNG to write.
  """
  size = config.plot_grid
  old_mask = _in_domain(grid, config.old_domain)
  new_mask = _in_domain(grid, config.new_domain)
  union = old_mask | new_mask
  truth = input_pipeline.target_fn(grid)
  rows = [r for r in PREDICTION_TITLES if r in predictions]
  ncols = max(3, len(rows))
  fig, axes = plt.subplots(
    2, ncols, figsize=(2.9 * ncols + 1.0, 6.4), squeeze=False, layout="constrained"
  )
  low, high = plot_extent(config)
  kw = dict(
    origin="lower",
    extent=(low, high, low, high),
    cmap="RdBu_r",
    vmin=-1.5,
    vmax=1.5,
    interpolation="nearest",
  )
  errors = {e["row"]: e for e in results["table"]}
  top = [
    ("Ground truth: original", old_mask),
    ("Ground truth: new", new_mask),
    ("Ground truth: combined", union),
  ]
  image = None
  for ax, (title, mask) in zip(axes[0], top, strict=False):
    image = ax.imshow(_image(truth, mask, size), **kw)
    ax.set_title(title, fontsize=9)
  for ax, row in zip(axes[1], rows, strict=False):
    image = ax.imshow(_image(predictions[row], union, size), **kw)
    entry = errors[row]
    ax.set_title(
      f"{PREDICTION_TITLES[row]}\norig {entry['old_error']['mean']:.3f}, "
      f"new {entry['new_error']['mean']:.3f}",
      fontsize=9,
    )
  for ax in axes.ravel():
    if not ax.images:
      ax.axis("off")
      continue
    for domain, color in ((config.old_domain, "k"), (config.new_domain, "g")):
      a, b = domain
      ax.plot([a, b, b, a, a], [a, a, b, b, a], color=color, lw=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.7)
  fig.suptitle(
    f"f(x) = sin(10|x|): ground truth and predictions (seed {results['seeds'][0]}; "
    "errors: mean over seeds)",
    fontsize=10,
  )
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_tradeoff(results: dict, config: Any, path: pathlib.Path) -> None:
  """Original-data error vs new-data error along training, one curve per run.

  One panel per main learning rate of PROFIT: its curves (one per
  ``lambda_main / lambda_ref`` ratio) beside every full fine-tuning curve
  (one per learning rate) and head-only fine-tuning. Every curve is the mean
  over seeds at each evaluation and starts at the base model (black star); a
  circle marks its end, a square the point where a PROFIT run had consumed
  ``ft_steps`` batches (compute-matched with full fine-tuning).

  Args:
    results: the results dict.
    config: the configuration.
    path: PNG to write.
  """
  runs = results["runs"].values()
  full = sorted((r for r in runs if r["method"] == "full"), key=lambda r: r["lr"])
  head = [r for r in runs if r["method"] == "head"]
  profit = [r for r in runs if r["method"] == "profit"]
  main_lrs = sorted({r["lr"] for r in profit}) or [None]
  ratios = sorted({r["ratio"] for r in profit})
  fig, axes = plt.subplots(
    1,
    len(main_lrs),
    figsize=(6.2 * len(main_lrs), 5.6),
    squeeze=False,
    sharex=True,
    sharey=True,
  )
  blues = plt.get_cmap("Blues")
  warm = plt.get_cmap("autumn")
  base = results["table"][0]

  def draw(ax, run: dict, color: Any, style: str, label: str) -> None:
    curve = run["mean_curve"]
    new, old = np.asarray(curve["new_error"]), np.asarray(curve["old_error"])
    ax.plot(new, old, style, color=color, lw=1.4, label=label)
    ax.plot(new[-1], old[-1], "o", color=color, ms=5)
    batches = np.asarray(curve["batches"])
    at = np.flatnonzero(batches == config.ft_steps)
    if run["method"] == "profit" and at.size and batches[-1] != config.ft_steps:
      ax.plot(new[at[0]], old[at[0]], "s", color=color, ms=6, mfc="none")

  for ax, main_lr in zip(axes[0], main_lrs, strict=True):
    for i, run in enumerate(full):
      shade = 0.35 + 0.65 * i / max(1, len(full) - 1)
      draw(ax, run, blues(shade), "-", f"full FT, lr {run['lr']:g}")
    for run in head:
      draw(ax, run, "0.45", "-", f"head only, lr {run['lr']:g}")
    for run in sorted(
      (r for r in profit if r["lr"] == main_lr),
      key=lambda r: (r["convention"], r["ratio"]),
    ):
      shade = 0.85 * ratios.index(run["ratio"]) / max(1, len(ratios) - 1)
      style = ":" if run["convention"] == "batches" else "--"
      draw(
        ax,
        run,
        warm(shade),
        style,
        f"PROFIT, ratio {run['ratio']:g} ({run['convention']})",
      )
    ax.plot(
      base["new_error"]["mean"],
      base["old_error"]["mean"],
      "*",
      color="k",
      ms=12,
      label="base model",
      zorder=5,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("new-data error (MSE, noise-free test set)")
    title = "PROFIT main lr " + (f"{main_lr:g}" if main_lr else "(none)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
  # Frame the baselines; PROFIT curves that diverge leave the frame.
  reference = [*full, *head]
  xs = [base["new_error"]["mean"]] + [
    v for r in reference for v in r["mean_curve"]["new_error"]
  ]
  ys = [base["old_error"]["mean"]] + [
    v for r in reference for v in r["mean_curve"]["old_error"]
  ]
  every_x = xs + [v for r in profit for v in r["mean_curve"]["new_error"]]
  every_y = ys + [v for r in profit for v in r["mean_curve"]["old_error"]]
  axes[0, 0].set_xlim(0.8 * min(every_x), min(max(every_x), 3 * max(xs)) * 1.25)
  axes[0, 0].set_ylim(0.8 * min(every_y), min(max(every_y), 3 * max(ys)) * 1.25)
  axes[0, 0].set_ylabel("original-data error (MSE, noise-free test set)")
  fig.suptitle(
    "Old vs new error along fine-tuning (mean over seeds; lower-left is "
    f"better)\no: end of run; □: PROFIT after {config.ft_steps} batches",
    fontsize=10,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_errors_vs_batches(results: dict, path: pathlib.Path) -> None:
  """Both test errors against batches consumed for the table's runs.

  Args:
    results: the results dict.
    path: PNG to write.
  """
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  colors = {
    "full": "tab:blue",
    "head": "0.45",
    "profit_cycles": "tab:red",
    "profit_batches": "tab:orange",
  }
  for entry in results["table"][1:]:
    curve = results["runs"][entry["run"]]["mean_curve"]
    for ax, key in zip(axes, ("old_error", "new_error"), strict=True):
      ax.plot(
        curve["batches"],
        curve[key],
        color=colors.get(entry["row"]),
        label=entry["label"],
      )
  base = results["table"][0]
  for ax, key, title in zip(
    axes, ("old_error", "new_error"), ("original data", "new data"), strict=True
  ):
    ax.axhline(base[key]["mean"], color="k", lw=0.8, ls="--", label="base model")
    ax.set_yscale("log")
    ax.set_xlabel("batches consumed")
    ax.set_ylabel("MSE (noise-free test set)")
    ax.set_title(f"Error on the {title} (mean over seeds)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_all(
  results: dict,
  predictions: dict[str, np.ndarray],
  grid: np.ndarray,
  config: Any,
  workdir: pathlib.Path,
) -> list[str]:
  """Writes every figure into ``workdir``.

  Args:
    results: the results dict.
    predictions: table row -> predictions on ``grid``.
    grid: from :func:`make_grid`.
    config: the configuration.
    workdir: the output folder.

  Returns:
    The file names written.
  """
  names = ["fig3_predictions.png", "errors_vs_batches.png"]
  plot_predictions(results, predictions, grid, config, workdir / names[0])
  plot_errors_vs_batches(results, workdir / names[1])
  if any(r["method"] == "full" for r in results["runs"].values()):
    names.append("tradeoff.png")
    plot_tradeoff(results, config, workdir / names[-1])
  return names
