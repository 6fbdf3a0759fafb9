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


def _batch_sizes(results: dict) -> list[int]:
  config = results["config"]
  return list(config["batch_sizes"] or [config["batch_size"]])


def _run_label(run: dict) -> str:
  name = {"full": "full FT", "head": "head only", "l2sp": "L2-SP", "profit": "PROFIT"}
  label = f"{name[run['method']]}, lr {run['lr']:g}"
  if run["method"] == "l2sp":
    label += f", alpha {run['alpha']:g}"
  if run["method"] == "profit":
    label += f", ratio {run['ratio']:g}"
  return label


def plot_tradeoff(results: dict, config: Any, path: pathlib.Path) -> None:
  """Original- vs new-data error of every family, one panel per batch size.

  Each curve is one run along fine-tuning (mean over seeds, test sets), cut
  at the common budget of ``ft_steps`` batches and starting at the base model
  (black star): full fine-tuning (blues, one per lr), head only (grey), L2-SP
  (greens, one per alpha), PROFIT (warm colours, one per lr and ratio). Dotted
  lines with dots: WiSE-FT interpolations of a run's final weights with the
  base model, in that run's colour.

  Args:
    results: the results dict.
    config: the configuration.
    path: PNG to write.
  """
  sizes = _batch_sizes(results)
  fig, axes = plt.subplots(
    1, len(sizes), figsize=(6.4 * len(sizes), 5.8), squeeze=False,
    sharex=True, sharey=True,
  )  # fmt: skip
  base = results["table"][0]
  budget = config.ft_steps
  xs, ys = [base["new_error"]["mean"]], [base["old_error"]["mean"]]
  for ax, bs in zip(axes[0], sizes, strict=True):
    runs = [r for r in results["runs"].values() if r["batch_size"] == bs]
    groups = {
      "full": (plt.get_cmap("Blues"), lambda r: r["lr"]),
      "head": (None, lambda r: r["lr"]),
      "l2sp": (plt.get_cmap("Greens"), lambda r: r["alpha"]),
      "profit": (plt.get_cmap("autumn"), lambda r: (r["lr"], r["ratio"])),
    }
    for method, (cmap, key) in groups.items():
      members = sorted((r for r in runs if r["method"] == method), key=key)
      for i, run in enumerate(members):
        if cmap is None:
          color = "0.45"
        elif method == "profit":
          color = cmap(0.8 * i / max(1, len(members) - 1))
        else:
          color = cmap(0.4 + 0.6 * i / max(1, len(members) - 1))
        curve = run["mean_curve"]
        keep = np.asarray(curve["batches"]) <= budget
        new = np.asarray(curve["new_error"])[keep]
        old = np.asarray(curve["old_error"])[keep]
        label = _run_label(run)
        style = "--" if method == "profit" else "-"
        ax.plot(new, old, style, color=color, lw=1.3, label=label)
        ax.plot(new[-1], old[-1], "o", color=color, ms=4)
        xs += new.tolist()
        ys += old.tolist()
        if "mean_wise" in run and run["batches"] <= budget:
          wise = run["mean_wise"]
          ax.plot(
            wise["new_error"], wise["old_error"], ":", marker=".", ms=3,
            color=color, lw=1.0,
          )  # fmt: skip
    ax.plot(
      base["new_error"]["mean"], base["old_error"]["mean"], "*",
      color="k", ms=12, label="base model", zorder=5,
    )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("new-data error (MSE, noise-free test set)")
    ax.set_title(f"fine-tuning batch size {bs}, {budget} batches", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="best")
  # Frame the fine-tuning curves; WiSE-FT lines stay between them and the base.
  finite_x = [v for v in xs if np.isfinite(v) and v > 0]
  finite_y = [v for v in ys if np.isfinite(v) and v > 0]
  axes[0, 0].set_xlim(0.8 * min(finite_x), 1.25 * min(max(finite_x), 1e3))
  axes[0, 0].set_ylim(0.8 * min(finite_y), 1.25 * min(max(finite_y), 1e3))
  axes[0, 0].set_ylabel("original-data error (MSE, noise-free test set)")
  fig.suptitle(
    "Old vs new error at equal batch budgets (mean over seeds; lower-left is "
    "better)\nsolid/dashed: along training; dotted: WiSE-FT of the run's final "
    "weights, a = 0 ... 1",
    fontsize=10,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_diagnostics(results: dict, path: pathlib.Path) -> None:
  """PROFIT's removed gradient fraction and cos(g, delta) along training.

  Args:
    results: the results dict.
    path: PNG to write.
  """
  sizes = _batch_sizes(results)
  fig, axes = plt.subplots(
    2, len(sizes), figsize=(5.2 * len(sizes), 7.0), squeeze=False, sharey="row"
  )
  warm = plt.get_cmap("autumn")
  for col, bs in enumerate(sizes):
    profit = sorted(
      (
        r
        for r in results["runs"].values()
        if r["batch_size"] == bs and "diagnostics" in r
      ),
      key=lambda r: (r["lr"], r["ratio"]),
    )
    for i, run in enumerate(profit):
      color = warm(0.8 * i / max(1, len(profit) - 1))
      curves = [s["diag_curve"] for s in run["per_seed"]]
      batches = curves[0]["batches"]
      for row, key in enumerate(("removed_fraction", "cosine")):
        mean = np.mean([c[key] for c in curves], axis=0)
        axes[row, col].plot(
          batches, mean, color=color, label=f"lr {run['lr']:g}, ratio {run['ratio']:g}"
        )
    axes[0, col].set_title(f"PROFIT, batch size {bs}", fontsize=10)
    axes[1, col].set_xlabel("batches consumed")
    for row in range(2):
      axes[row, col].set_xscale("log")
      axes[row, col].grid(True, alpha=0.3)
    axes[0, col].legend(fontsize=7)
  axes[0, 0].set_ylabel("removed fraction ||g - g'|| / ||g||")
  axes[1, 0].set_ylabel("cos(g, delta)")
  fig.suptitle(
    "PROFIT's projection along training (means between evaluations and over seeds)",
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
  if any("diagnostics" in r for r in results["runs"].values()):
    names.append("diagnostics.png")
    plot_diagnostics(results, workdir / names[-1])
  return names
