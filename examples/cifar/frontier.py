"""The compute-matched frontier: old-task levels, the best new-task score at each.

A *point* is one evaluated model: a moment of a fine-tuning run (indexed by
the batches seen) or a WiSE-FT interpolation of one. It carries CIFAR-10 (old
task) and CIFAR-100 (new task) accuracy on held-out validation images
(``old_val``, ``new_val``) and on the test sets (``old_test``, ``new_test``).

The selection rule, the same for every family (``examples.common.frontier``):
at level ``L``, among the family's points whose ``old_val >= L * base``
(``base``: the pre-trained model's CIFAR-10 validation accuracy), take the one
with the highest ``new_val`` (ties: the higher ``old_val``, then the fewer
batches) and report its test accuracies. It is done per seed; the table gives the mean and range
over seeds.
"""

import dataclasses
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from examples.cifar.configs import default
from examples.common import frontier as common_frontier

Point = Mapping[str, Any]
_KEYS = {
  "old_val": "c10_val_accuracy",
  "new_val": "c100_val_accuracy",
  "old_test": "c10_test_accuracy",
  "new_test": "c100_test_accuracy",
}


def point(metrics: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
  """A point from an evaluation's metrics (``c10_val_accuracy``, ...).

  Args:
    metrics: a history entry or a WiSE-FT evaluation.
    **extra: labels kept with the point (run, batches, ``a``).

  Returns:
    ``{"old_val", "new_val", "old_test", "new_test", **extra}``.
  """
  return {**{k: float(metrics[v]) for k, v in _KEYS.items()}, **extra}


def select(points: Sequence[Point], base: float, level: float) -> Point | None:
  """The selection rule (``examples.common.frontier``) at one level.

  Args:
    points: the family's points of one seed.
    base: the pre-trained model's old-task validation accuracy.
    level: the fraction of ``base`` the old-task accuracy must keep.

  Returns:
    The selected point, or None when no point keeps the level.
  """
  return common_frontier.select(
    points,
    level * base,
    old=lambda p: p["old_val"],
    new=lambda p: p["new_val"],
    batches=lambda p: p.get("batches", 0),
  )


def pareto(points: Sequence[Point], x: str = "old_val", y: str = "new_val"):
  """The points no other point beats on both ``x`` and ``y``, by decreasing ``x``."""
  return common_frontier.pareto(points, x=lambda p: p[x], y=lambda p: p[y])


def table(
  families: Mapping[str, Mapping[int, Sequence[Point]]],
  bases: Mapping[int, float],
  levels: Sequence[float],
) -> list[dict[str, Any]]:
  """The frontier table: per family and level, the selected test scores.

  Args:
    families: ``{family: {seed: points}}``.
    bases: ``{seed: the pre-trained old-task validation accuracy}``.
    levels: the old-task levels (fractions of the base).

  Returns:
    One row per family and level: ``family``, ``level``, ``new_test`` and
    ``old_test`` (lists over seeds, None where no point keeps the level), and
    ``selected`` (the points).
  """
  rows = []
  for family, by_seed in families.items():
    for level in levels:
      chosen = [select(points, bases[seed], level) for seed, points in by_seed.items()]
      rows.append(
        {
          "family": family,
          "level": level,
          "new_test": [None if c is None else c["new_test"] for c in chosen],
          "old_test": [None if c is None else c["old_test"] for c in chosen],
          "selected": chosen,
        }
      )
  return rows


def _spread(values: Sequence[float | None]) -> str:
  if any(v is None for v in values):
    return "-"
  values = 100 * np.asarray(values)
  if len(values) == 1:
    return f"{values[0]:.2f}"
  return f"{values.mean():.2f} ({values.min():.2f}-{values.max():.2f})"


def format_table(rows: Sequence[Mapping[str, Any]], levels: Sequence[float]) -> str:
  """Markdown: a row per family, a column per level (CIFAR-100 test %).

  Args:
    rows: the rows of :func:`table`.
    levels: the levels, in column order.

  Returns:
    The table; a cell is the mean over seeds and the (min-max) range, "-"
    where some seed has no point at that level.
  """
  head = " | ".join(f"CIFAR-10 >= {100 * level:g}%" for level in levels)
  lines = [f"| family | {head} |", "|---" * (len(levels) + 1) + "|"]
  by_family: dict[str, dict[float, Mapping[str, Any]]] = {}
  for row in rows:
    by_family.setdefault(row["family"], {})[row["level"]] = row
  for family, cells in by_family.items():
    lines.append(
      f"| {family} | "
      + " | ".join(_spread(cells[level]["new_test"]) for level in levels)
      + " |"
    )
  return "\n".join(lines)


# The frontier's runs and what is read off them (training is train.py's).


def plan(
  config: default.Config,
) -> list[tuple[str, default.Config, str, float]]:
  """The frontier's runs at ``config.batch_size`` and seed ``config.seed``.

  Args:
    config: supplies the ``frontier_*`` grids, ``l2sp_alphas``, ``l2sp_lr``,
      ``lp_epochs`` (1 when unset) and ``wise_points``.

  Returns:
    ``(family, run config, optimizer, lr)`` per run. Full fine-tuning and
    PROFIT runs carry a WiSE-FT curve (families ``WiSE-FT`` and ``WiSE-FT of
    PROFIT``).
  """
  plain = dataclasses.replace(
    config, head_only=False, l2sp_alpha=0.0, lp_epochs=0, wise_points=0
  )
  wise = dataclasses.replace(plain, wise_points=config.wise_points)
  plan = [("full FT", wise, "adam", lr) for lr in config.frontier_lrs]
  plan += [
    ("L2-SP", dataclasses.replace(plain, l2sp_alpha=alpha), "adam", config.l2sp_lr)
    for alpha in config.l2sp_alphas
  ]
  lp = dataclasses.replace(plain, lp_epochs=config.lp_epochs or 1)
  plan += [("LP-FT", lp, "adam", lr) for lr in config.frontier_lrs]
  head = dataclasses.replace(plain, head_only=True)
  plan += [("head only", head, "adam", lr) for lr in config.frontier_head_lrs]
  plan += [
    ("PROFIT", dataclasses.replace(wise, ratio=ratio), "profit", lr)
    for ratio in config.frontier_ratios
    for lr in config.frontier_lrs
  ]
  return plan


def run_points(result: dict[str, Any]) -> list[dict[str, Any]]:
  """The evaluation points along a run, indexed by batches seen."""
  label = pathlib.Path(result["directory"]).name
  return [point(h, run=label, batches=h["batches_seen"]) for h in result["history"]]


def wise_points(result: dict[str, Any]) -> list[dict[str, Any]]:
  """The WiSE-FT curve of a run, all at the run's batches seen."""
  label = pathlib.Path(result["directory"]).name
  return [
    point(w, run=label, a=w["a"], batches=result["batches_seen"])
    for w in result["wise"]
  ]


def mechanism(results: list[dict[str, Any]]) -> dict[str, Any]:
  """PROFIT's diagnostics along training, averaged over its runs."""
  profit_runs = [r for r in results if r["optimizer"] == "profit"]
  rows = []
  for r in profit_runs:
    trained = [h for h in r["history"] if "removed_fraction" in h]
    rows.append(
      {
        "run": pathlib.Path(r["directory"]).name,
        "lr": r["lr"],
        "ratio": r["ratio"],
        "seed": r["seed"],
        "batches_seen": [h["batches_seen"] for h in trained],
        "removed_fraction": [h["removed_fraction"] for h in trained],
        "cosine": [h["cosine"] for h in trained],
        "projected_fraction": [h["projected_fraction"] for h in trained],
        "mean_removed_fraction": float(
          np.mean([h["removed_fraction"] for h in trained])
        ),
        "mean_cosine": float(np.mean([h["cosine"] for h in trained])),
        "mean_projected_fraction": float(
          np.mean([h["projected_fraction"] for h in trained])
        ),
      }
    )
  return {"profit_runs": rows}


# Running the frontier (training is train.py's, passed in).

Finetune = Callable[[default.Config, str, float], dict[str, Any]]


def _families(
  config: default.Config,
  finetune: Finetune,
  seeds: tuple[int, ...],
  only: tuple[str, ...] | None = None,
) -> tuple[dict[str, dict[int, list]], list[dict[str, Any]]]:
  """Runs the plan per seed; ``{family: {seed: points}}`` and the runs."""
  families: dict[str, dict[int, list]] = {}
  done = []
  for seed in seeds:
    for family, run_config, optimizer, lr in plan(
      dataclasses.replace(config, seed=seed)
    ):
      if only is not None and family not in only:
        continue
      result = finetune(run_config, optimizer, lr)
      result["family"] = family
      done.append(result)
      families.setdefault(family, {}).setdefault(seed, []).extend(run_points(result))
      if "wise" in result:
        wise = "WiSE-FT of PROFIT" if family == "PROFIT" else "WiSE-FT"
        families.setdefault(wise, {}).setdefault(seed, []).extend(wise_points(result))
  return families, done


_STUDY_FAMILIES = ("full FT", "PROFIT")


def run(config: default.Config, base: float, finetune: Finetune) -> dict[str, Any]:
  """The frontier at ``batch_size`` over ``seeds``, then the batch-size study.

  Args:
    config: supplies the plan (:func:`plan`), ``seeds``, ``levels`` and
      ``batch_sizes``.
    base: the pre-trained model's CIFAR-10 validation accuracy.
    finetune: ``(run config, optimizer, lr) -> result`` of one run.

  Returns:
    ``{"runs", "base_c10_val_accuracy", "frontier" (per batch size: the
    families' points, rows, table, mechanism and seeds), "batch_size_study",
    "table", "selection_metric"}``.
  """
  families, done = _families(config, finetune, config.seeds)
  bases = dict.fromkeys(config.seeds, base)
  rows = table(families, bases, config.levels)
  by_batch_size = {
    config.batch_size: {
      "families": families,
      "rows": rows,
      "table": format_table(rows, config.levels),
      "mechanism": mechanism(done),
      "seeds": list(config.seeds),
    }
  }
  study_seed = config.seeds[:1]
  for batch_size in config.batch_sizes:
    if batch_size == config.batch_size:
      continue
    sized = dataclasses.replace(config, batch_size=batch_size)
    fams, sized_runs = _families(sized, finetune, study_seed, only=_STUDY_FAMILIES)
    study_rows = table(fams, dict.fromkeys(study_seed, base), config.levels)
    by_batch_size[batch_size] = {
      "families": fams,
      "rows": study_rows,
      "table": format_table(study_rows, config.levels),
      "mechanism": mechanism(sized_runs),
      "seeds": list(study_seed),
    }
    done += sized_runs
  # The main batch size restricted to the study's families and seed, so the
  # batch-size rows compare like with like.
  main = {
    f: {s: pts for s, pts in by_seed.items() if s in study_seed}
    for f, by_seed in families.items()
    if f in (*_STUDY_FAMILIES, "WiSE-FT", "WiSE-FT of PROFIT")
  }
  study = []
  for batch_size, entry in sorted(by_batch_size.items()):
    fams = main if batch_size == config.batch_size else entry["families"]
    for row in table(fams, dict.fromkeys(study_seed, base), config.levels):
      study.append({"batch_size": batch_size, **row})
  return {
    "runs": done,
    "base_c10_val_accuracy": base,
    "frontier": by_batch_size,
    "batch_size_study": study,
    "table": by_batch_size[config.batch_size]["table"],
    "selection_metric": (
      "best CIFAR-100 validation accuracy with CIFAR-10 validation accuracy >= "
      "level x the pre-trained model's; test accuracies reported"
    ),
  }
