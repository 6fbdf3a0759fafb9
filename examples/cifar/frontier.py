"""The compute-matched frontier: the best new-task score at each old-task level.

A *point* is one evaluated model (a moment of a run or a WiSE-FT mix); the rule
of ``examples.common.frontier`` selects on validation, per seed and level.
"""

import dataclasses
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from examples.cifar.configs import default
from examples.common import frontier as common_frontier

Point = Mapping[str, Any]
# A point's keys -> the metrics': old_val, new_val, old_test, new_test.
_KEYS = {
  f"{task}_{split}": f"c{n}_{split}_accuracy"
  for split in ("val", "test")
  for task, n in (("old", 10), ("new", 100))
}
_STUDY_FAMILIES = ("full FT", "PROFIT")
_DIAGNOSTICS = ("removed_fraction", "cosine", "projected_fraction")


def point(metrics: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
  """A point from an evaluation's metrics, with ``extra`` labels (run, batches, a)."""
  return {**{k: float(metrics[v]) for k, v in _KEYS.items()}, **extra}


def select(points: Sequence[Point], base: float, level: float) -> Point | None:
  """The selected point at ``level`` (a fraction of ``base``), or None."""
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


def table(families: Mapping, bases: Mapping, levels: Sequence[float]) -> list[dict]:
  """Per family and level of ``{family: {seed: points}}``, the selections over seeds."""
  rows = []
  for family, by_seed in families.items():
    for level in levels:
      chosen = [select(points, bases[seed], level) for seed, points in by_seed.items()]
      tests = {k: [c and c[k] for c in chosen] for k in ("new_test", "old_test")}
      rows.append({"family": family, "level": level, **tests, "selected": chosen})
  return rows


def _spread(values: Sequence[float | None]) -> str:
  if any(v is None for v in values):
    return "-"
  values = 100 * np.asarray(values)
  if len(values) == 1:
    return f"{values[0]:.2f}"
  return f"{values.mean():.2f} ({values.min():.2f}-{values.max():.2f})"


def format_table(rows: Sequence[Mapping[str, Any]], levels: Sequence[float]) -> str:
  """Markdown: a row per family, a column per level, CIFAR-100 test % (mean (range))."""
  head = " | ".join(f"CIFAR-10 >= {100 * level:g}%" for level in levels)
  lines = [f"| family | {head} |", "|---" * (len(levels) + 1) + "|"]
  by_family: dict[str, dict[float, Mapping[str, Any]]] = {}
  for row in rows:
    by_family.setdefault(row["family"], {})[row["level"]] = row
  for family, cells in by_family.items():
    spreads = " | ".join(_spread(cells[level]["new_test"]) for level in levels)
    lines.append(f"| {family} | {spreads} |")
  return "\n".join(lines)


def plan(config: default.Config) -> list[tuple[str, default.Config, str, float]]:
  """``(family, run config, optimizer, lr)`` of the frontier's runs at one seed."""
  plain = dataclasses.replace(
    config, head_only=False, l2sp_alpha=0.0, lp_epochs=0, wise_points=0
  )
  wise = dataclasses.replace(plain, wise_points=config.wise_points)
  runs = [("full FT", wise, "adam", lr) for lr in config.frontier_lrs]
  runs += [
    ("L2-SP", dataclasses.replace(plain, l2sp_alpha=alpha), "adam", config.l2sp_lr)
    for alpha in config.l2sp_alphas
  ]
  lp = dataclasses.replace(plain, lp_epochs=config.lp_epochs or 1)
  runs += [("LP-FT", lp, "adam", lr) for lr in config.frontier_lrs]
  head = dataclasses.replace(plain, head_only=True)
  runs += [("head only", head, "adam", lr) for lr in config.frontier_head_lrs]
  runs += [
    ("PROFIT", dataclasses.replace(wise, ratio=ratio), "profit", lr)
    for ratio in config.frontier_ratios
    for lr in config.frontier_lrs
  ]
  return runs


def mechanism(results: list[dict[str, Any]]) -> dict[str, Any]:
  """PROFIT's diagnostics along training, per PROFIT run."""
  rows = []
  for r in (r for r in results if r["optimizer"] == "profit"):
    trained = [h for h in r["history"] if "removed_fraction" in h]
    rows.append(
      {
        "run": pathlib.Path(r["directory"]).name,
        "lr": r["lr"],
        "ratio": r["ratio"],
        "seed": r["seed"],
        "batches_seen": [h["batches_seen"] for h in trained],
        **{k: [h[k] for h in trained] for k in _DIAGNOSTICS},
        **{f"mean_{k}": float(np.mean([h[k] for h in trained])) for k in _DIAGNOSTICS},
      }
    )
  return {"profit_runs": rows}


def _families(config, finetune, seeds, only=None):
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
      label, batches = pathlib.Path(result["directory"]).name, result["batches_seen"]
      points = {
        family: [
          point(h, run=label, batches=h["batches_seen"]) for h in result["history"]
        ]
      }
      if "wise" in result:
        wise = "WiSE-FT of PROFIT" if family == "PROFIT" else "WiSE-FT"
        points[wise] = [
          point(w, run=label, a=w["a"], batches=batches) for w in result["wise"]
        ]
      for name, pts in points.items():
        families.setdefault(name, {}).setdefault(seed, []).extend(pts)
  return families, done


def run(config: default.Config, base: float, finetune: Callable) -> dict[str, Any]:
  """The frontier at ``batch_size`` over ``seeds``, then the batch-size study.

  ``base``: the pre-trained CIFAR-10 validation accuracy; ``finetune(run
  config, optimizer, lr)`` runs one (training is ``train.py``'s).
  """
  by_batch_size, done = {}, []
  study_seed = config.seeds[:1]
  others = [b for b in config.batch_sizes if b != config.batch_size]
  for batch_size in (config.batch_size, *others):
    main = batch_size == config.batch_size
    sized = dataclasses.replace(config, batch_size=batch_size)
    seeds = config.seeds if main else study_seed
    fams, runs = _families(sized, finetune, seeds, None if main else _STUDY_FAMILIES)
    rows = table(fams, dict.fromkeys(seeds, base), config.levels)
    by_batch_size[batch_size] = {
      "families": fams,
      "rows": rows,
      "table": format_table(rows, config.levels),
      "mechanism": mechanism(runs),
      "seeds": list(seeds),
    }
    done += runs
  # The main batch size restricted to the study's families and seed, so the
  # batch-size rows compare like with like.
  main_families = {
    f: {s: pts for s, pts in by_seed.items() if s in study_seed}
    for f, by_seed in by_batch_size[config.batch_size]["families"].items()
    if f in (*_STUDY_FAMILIES, "WiSE-FT", "WiSE-FT of PROFIT")
  }
  study = []
  for batch_size, entry in sorted(by_batch_size.items()):
    fams = main_families if batch_size == config.batch_size else entry["families"]
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
