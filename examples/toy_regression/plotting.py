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
SHARED = dict(squeeze=False, sharex=True, sharey=True)
WISE = dict(marker=".", ms=3, lw=1.0)
SORT_KEYS = dict(full=["lr"], head=["lr"], l2sp=["alpha"], profit=["lr", "ratio"])
RUN_NAMES = dict(full="full FT", head="head only", l2sp="L2-SP", profit="PROFIT")


def _extent(config: dict) -> tuple[float, float]:
  old, new = config["old_domain"], config["new_domain"]
  return min(old[0], new[0]), max(old[1], new[1])


def make_grid(config: dict) -> np.ndarray:
  """``plot_grid ** 2`` points (float32 ``[n, 2]``), ``x1`` along image columns."""
  axis = np.linspace(*_extent(config), config["plot_grid"], dtype=np.float32)
  x1, x2 = np.meshgrid(axis, axis)
  return np.stack([x1.ravel(), x2.ravel()], axis=-1)


def _save(fig: Any, path: pathlib.Path, title: str | None, tight: bool = True) -> None:
  if title:
    fig.suptitle(title, fontsize=10)
  if tight:
    fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_predictions(results, predictions, grid, path) -> None:
  """Ground truth (original, new, combined) and each table row's predictions."""
  config = results["config"]
  size, domains = config["plot_grid"], (config["old_domain"], config["new_domain"])
  in_domain = lambda d: np.all((grid >= d[0]) & (grid <= d[1]), axis=-1)
  old_mask, new_mask = map(in_domain, domains)
  union = old_mask | new_mask
  truth = input_pipeline.target_fn(grid)
  rows = [r for r in PREDICTION_TITLES if r in predictions]
  ncols = max(3, len(rows))
  fig, axes = plt.subplots(
    2, ncols, figsize=(2.9 * ncols + 1.0, 6.4), squeeze=False, layout="constrained"
  )
  low, high = _extent(config)
  kw = dict(origin="lower", extent=(low, high, low, high), cmap="RdBu_r")
  kw.update(vmin=-1.5, vmax=1.5, interpolation="nearest")
  image = lambda values, mask: np.where(mask, values, np.nan).reshape(size, size)
  errors = {e["row"]: e for e in results["table"]}
  top = [("original", old_mask), ("new", new_mask), ("combined", union)]
  for ax, (title, mask) in zip(axes[0], top, strict=False):
    im = ax.imshow(image(truth, mask), **kw)
    ax.set_title(f"Ground truth: {title}", fontsize=9)
  for ax, row in zip(axes[1], rows, strict=False):
    im = ax.imshow(image(predictions[row], union), **kw)
    old, new = (errors[row][k]["mean"] for k in ("old_error", "new_error"))
    ax.set_title(f"{PREDICTION_TITLES[row]}\norig {old:.3f}, new {new:.3f}", fontsize=9)
  for ax in axes.ravel():
    if not ax.images:
      ax.axis("off")
      continue
    for (a, b), color in zip(domains, "kg", strict=True):
      ax.plot([a, b, b, a, a], [a, a, b, b, a], color=color, lw=0.6)
    ax.set(xticks=[], yticks=[])
  fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7)
  seed = results["seeds"][0]
  title = f"f(x) = sin(10|x|): ground truth and predictions (seed {seed}; errors: "
  _save(fig, path, title + "mean over seeds)", tight=False)


def _batch_sizes(results: dict) -> list[int]:
  config = results["config"]
  return list(config["batch_sizes"] or [config["batch_size"]])


def _members(results: dict, batch_size: int, method: str) -> list[dict]:
  """The runs of a method at a batch size, sorted by their settings."""
  runs = results["runs"].values()
  runs = [r for r in runs if r["batch_size"] == batch_size and r["method"] == method]
  return sorted(runs, key=lambda r: [r[k] for k in SORT_KEYS[method]])


def _run_label(run: dict) -> str:
  extra = {"l2sp": "alpha", "profit": "ratio"}.get(run["method"])
  suffix = f", {extra} {run[extra]:g}" if extra else ""
  return f"{RUN_NAMES[run['method']]}, lr {run['lr']:g}{suffix}"


def _color(method: str, i: int, n: int) -> Any:
  """Blues (full), grey (head), greens (L2-SP), warm colours (PROFIT)."""
  if method == "head":
    return "0.45"
  cmap = plt.get_cmap({"full": "Blues", "l2sp": "Greens", "profit": "autumn"}[method])
  if method == "profit":
    return cmap(0.8 * i / max(1, n - 1))
  return cmap(0.4 + 0.6 * i / max(1, n - 1))


def plot_tradeoff(results: dict, path: pathlib.Path) -> None:
  """Original- vs new-data error of every run along fine-tuning (mean over seeds,
  test sets, cut at ``ft_steps`` batches), one panel per batch size; dotted:
  WiSE-FT of a run's final weights; black star: the base model."""
  sizes, budget = _batch_sizes(results), results["config"]["ft_steps"]
  fig, axes = plt.subplots(1, len(sizes), figsize=(6.4 * len(sizes), 5.8), **SHARED)
  base = results["table"][0]
  xs, ys = [base["new_error"]["mean"]], [base["old_error"]["mean"]]
  for ax, bs in zip(axes[0], sizes, strict=True):
    for method in SORT_KEYS:
      members = _members(results, bs, method)
      for i, run in enumerate(members):
        color = _color(method, i, len(members))
        curve = run["mean_curve"]
        keep = np.asarray(curve["batches"]) <= budget
        new, old = (np.asarray(curve[k])[keep] for k in ("new_error", "old_error"))
        style = "--" if method == "profit" else "-"
        ax.plot(new, old, style, color=color, lw=1.3, label=_run_label(run))
        ax.plot(new[-1], old[-1], "o", color=color, ms=4)
        xs += new.tolist()
        ys += old.tolist()
        if "mean_wise" in run and run["batches"] <= budget:
          wise = run["mean_wise"]
          ax.plot(wise["new_error"], wise["old_error"], ":", color=color, **WISE)
    ax.plot(xs[0], ys[0], "*", color="k", ms=12, label="base model", zorder=5)
    ax.set(
      xscale="log", yscale="log", xlabel="new-data error (MSE, noise-free test set)"
    )
    ax.set_title(f"fine-tuning batch size {bs}, {budget} batches", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="best")
  # Frame the fine-tuning curves; WiSE-FT lines stay between them and the base.
  finite_x = [v for v in xs if np.isfinite(v) and v > 0]
  finite_y = [v for v in ys if np.isfinite(v) and v > 0]
  axes[0, 0].set_xlim(0.8 * min(finite_x), 1.25 * min(max(finite_x), 1e3))
  axes[0, 0].set_ylim(0.8 * min(finite_y), 1.25 * min(max(finite_y), 1e3))
  axes[0, 0].set_ylabel("original-data error (MSE, noise-free test set)")
  title = (
    "Old vs new error at equal batch budgets (mean over seeds; lower-left is "
    "better)\nsolid/dashed: along training; dotted: WiSE-FT of the run's final "
    "weights, a = 0 ... 1"
  )
  _save(fig, path, title)


def plot_diagnostics(results: dict, path: pathlib.Path) -> None:
  """PROFIT's removed gradient fraction and cos(g, delta) along training."""
  sizes = _batch_sizes(results)
  fig, axes = plt.subplots(
    2, len(sizes), figsize=(5.2 * len(sizes), 7.0), squeeze=False, sharey="row"
  )
  for col, bs in enumerate(sizes):
    profit = _members(results, bs, "profit")
    for i, run in enumerate(profit):
      curves = [s["diag_curve"] for s in run["per_seed"]]
      label = f"lr {run['lr']:g}, ratio {run['ratio']:g}"
      for row, key in enumerate(("removed_fraction", "cosine")):
        mean = np.mean([c[key] for c in curves], axis=0)
        color = _color("profit", i, len(profit))
        axes[row, col].plot(curves[0]["batches"], mean, color=color, label=label)
    axes[0, col].set_title(f"PROFIT, batch size {bs}", fontsize=10)
    axes[1, col].set_xlabel("batches consumed")
    for row in range(2):
      axes[row, col].set_xscale("log")
      axes[row, col].grid(True, alpha=0.3)
    axes[0, col].legend(fontsize=7)
  axes[0, 0].set_ylabel("removed fraction ||g - g'|| / ||g||")
  axes[1, 0].set_ylabel("cos(g, delta)")
  _save(
    fig,
    path,
    "PROFIT's projection along training (means between evaluations and over seeds)",
  )


def plot_errors_vs_batches(results: dict, path: pathlib.Path) -> None:
  """Both test errors against batches consumed for the table's runs."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  colors = {"full": "tab:blue", "head": "0.45"}
  colors.update(profit_cycles="tab:red", profit_batches="tab:orange")
  keys, titles = ("old_error", "new_error"), ("original data", "new data")
  for entry in results["table"][1:]:
    curve = results["runs"][entry["run"]]["mean_curve"]
    for ax, key in zip(axes, keys, strict=True):
      color = colors.get(entry["row"])
      ax.plot(curve["batches"], curve[key], color=color, label=entry["label"])
  base = results["table"][0]
  for ax, key, title in zip(axes, keys, titles, strict=True):
    ax.axhline(base[key]["mean"], color="k", lw=0.8, ls="--", label="base model")
    ax.set(yscale="log", xlabel="batches consumed", ylabel="MSE (noise-free test set)")
    ax.set_title(f"Error on the {title} (mean over seeds)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
  axes[0].legend(fontsize=7)
  _save(fig, path, None)


def save_all(results, predictions, grid, workdir: pathlib.Path) -> list:
  """Writes every figure into ``workdir``; returns their file names."""
  names = ["fig3_predictions.png", "errors_vs_batches.png"]
  plot_predictions(results, predictions, grid, workdir / names[0])
  plot_errors_vs_batches(results, workdir / names[1])
  if any(r["method"] == "full" for r in results["runs"].values()):
    names.append("tradeoff.png")
    plot_tradeoff(results, workdir / names[-1])
  if any("diagnostics" in r for r in results["runs"].values()):
    names.append("diagnostics.png")
    plot_diagnostics(results, workdir / names[-1])
  return names
