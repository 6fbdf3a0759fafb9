"""Aggregation over seeds and the Table-1-style table (text and Markdown)."""

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Paper, Table 1: (original-data error, new-data error).
PAPER_TABLE1 = {
  "baseline": (0.0054, 1.907),
  "full": (0.705, 0.504),
  "head": (0.110, 0.572),
  "profit": (0.046, 0.501),
}


def mean_and_se(values: Sequence[float]) -> dict[str, float]:
  """Mean and standard error of the mean over seeds.

  Args:
    values: one value per seed.

  Returns:
    ``{"mean", "se", "n"}``; ``se`` is None for a single value.
  """
  array = np.asarray(values, np.float64)
  se = float(array.std(ddof=1) / np.sqrt(array.size)) if array.size > 1 else None
  return {"mean": float(array.mean()), "se": se, "n": int(array.size)}


def _mean_curve(records: Sequence[dict]) -> dict[str, list]:
  curves = [r["curve"] for r in records]
  return {
    "batches": curves[0]["batches"],
    "main_steps": curves[0]["main_steps"],
    "old_error": np.mean([c["old_error"] for c in curves], axis=0).tolist(),
    "new_error": np.mean([c["new_error"] for c in curves], axis=0).tolist(),
  }


def _label(row: str, run: dict | None, config: Any) -> str:
  if row == "baseline":
    return "Baseline (original data only)"
  if row == "full":
    return f"Fine-tune, full model (lr {config.ft_lr:g})"
  if row == "head":
    return f"Fine-tune, head only (lr {config.ft_lr:g})"
  assert run is not None
  cycles, batches = run["main_steps"], run["batches"]
  suffix = ", compute-matched" if row == "profit_batches" else ""
  return f"PROFIT, {cycles} cycles = {batches} batches{suffix} (ratio {config.ratio:g})"


def assemble(
  *,
  config: Any,
  specs: Sequence[Any],
  table_runs: dict[str, str],
  base_info: list[dict],
  base_errors: list[tuple[float, float]],
  runs: dict[str, list[dict]],
) -> dict:
  """Builds the results dict (JSON-ready) from the per-seed records.

  Args:
    config: the configuration (a dataclass).
    specs: the runs (``RunSpec``), table and sweep.
    table_runs: table row -> run name.
    base_info: per seed, how the base model was obtained.
    base_errors: per seed, the base model's (original, new) errors.
    runs: run name -> per-seed records from ``train.finetune``.

  Returns:
    ``{"config", "paper_table1", "seeds", "base_models", "runs", "table"}``.
  """
  run_summaries = {}
  for spec in specs:
    records = runs[spec.name]
    summary = {
      **dataclasses.asdict(spec),
      "batches": records[0]["batches"],
      "main_steps": records[0]["main_steps"],
      "old_error": mean_and_se([r["old_error"] for r in records]),
      "new_error": mean_and_se([r["new_error"] for r in records]),
      "mean_curve": _mean_curve(records),
      "per_seed": records,
    }
    for key in ("projected_fraction", "delta_norm_median"):
      if key in records[0]:
        summary[key] = float(np.mean([r[key] for r in records]))
    run_summaries[spec.name] = summary
  table = [
    {
      "row": "baseline",
      "label": _label("baseline", None, config),
      "run": None,
      "batches": config.base_steps,
      "main_steps": config.base_steps,
      "old_error": mean_and_se([e[0] for e in base_errors]),
      "new_error": mean_and_se([e[1] for e in base_errors]),
      "paper": dict(
        zip(("old_error", "new_error"), PAPER_TABLE1["baseline"], strict=True)
      ),
    }
  ]
  for row, name in table_runs.items():
    run = run_summaries[name]
    paper = PAPER_TABLE1[row.split("_")[0]]
    table.append(
      {
        "row": row,
        "label": _label(row, run, config),
        "run": name,
        "batches": run["batches"],
        "main_steps": run["main_steps"],
        "old_error": run["old_error"],
        "new_error": run["new_error"],
        "paper": {"old_error": paper[0], "new_error": paper[1]},
      }
    )
  return json.loads(
    json.dumps(
      {
        "config": dataclasses.asdict(config),
        "paper_table1": PAPER_TABLE1,
        "seeds": list(config.seeds),
        "base_models": base_info,
        "runs": run_summaries,
        "table": table,
      }
    )
  )


#: New-data error thresholds of the frontier summary.
FRONTIER_THRESHOLDS = (4.0, 3.0, 2.0, 1.0, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)


def frontier(results: dict) -> list[dict]:
  """The best original-data error reachable at a given new-data error.

  For each method family (full fine-tuning at every swept learning rate,
  PROFIT at every swept learning rate and ratio, head-only) it pools the
  evaluation points of all its mean curves (after the start) and, for each
  threshold ``t``, reports the lowest original-data error among points with
  new-data error ``<= t`` (None when no point reaches ``t``). This picks
  points along training with the test error, the same oracle for every
  family: it compares frontiers, it is not a tuned result.

  Args:
    results: from :func:`assemble`.

  Returns:
    One dict per threshold: ``{"new_error_at_most": t, "full": ..., "profit":
    ..., "head": ...}``.
  """
  points: dict[str, list[tuple[float, float]]] = {}
  for run in results["runs"].values():
    curve = run["mean_curve"]
    pairs = list(zip(curve["new_error"], curve["old_error"], strict=True))[1:]
    points.setdefault(run["method"], []).extend(pairs)
  rows = []
  for threshold in FRONTIER_THRESHOLDS:
    row: dict[str, Any] = {"new_error_at_most": threshold}
    for method in ("full", "profit", "head"):
      olds = [old for new, old in points.get(method, []) if new <= threshold]
      row[method] = min(olds) if olds else None
    rows.append(row)
  return rows


def format_frontier(results: dict) -> str:
  """:func:`frontier` as aligned text.

  Args:
    results: with a ``"frontier"`` entry.

  Returns:
    A multi-line string.
  """
  lines = [
    "Frontier: lowest original-data error at new-data error <= t, over all "
    "evaluations of all swept runs (mean curves over seeds):",
    f"  {'t':>6}  {'full FT':>9}  {'PROFIT':>9}  {'head only':>9}",
  ]
  for row in results["frontier"]:
    cells = [
      "-" if row[m] is None else f"{row[m]:.4f}" for m in ("full", "profit", "head")
    ]
    lines.append(
      f"  {row['new_error_at_most']:>6g}  {cells[0]:>9}  {cells[1]:>9}  {cells[2]:>9}"
    )
  return "\n".join(lines)


def _fmt(stat: dict) -> str:
  mean, se = stat["mean"], stat["se"]
  if se is None:
    return f"{mean:.4f}"
  return f"{mean:.4f} ± {se:.4f}"


def format_table(results: dict) -> str:
  """The table as aligned plain text, paper numbers beside ours.

  Args:
    results: from :func:`assemble`.

  Returns:
    A multi-line string.
  """
  n = len(results["seeds"])
  header = (
    "method",
    "batches",
    "main steps",
    "original err (ours)",
    "new err (ours)",
    "original (paper)",
    "new (paper)",
  )
  rows = [header]
  for entry in results["table"]:
    rows.append(
      (
        entry["label"],
        str(entry["batches"]),
        str(entry["main_steps"]),
        _fmt(entry["old_error"]),
        _fmt(entry["new_error"]),
        f"{entry['paper']['old_error']:g}",
        f"{entry['paper']['new_error']:g}",
      )
    )
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  lines = [
    f"Toy 2-D regression (paper Table 1): MSE on noise-free test sets, "
    f"mean ± standard error over {n} seed{'s' if n > 1 else ''}"
  ]
  for j, row in enumerate(rows):
    cells = [row[0].ljust(widths[0])] + [
      c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
    ]
    lines.append("  ".join(cells))
    if j == 0:
      lines.append("  ".join("-" * w for w in widths))
  return "\n".join(lines)


def markdown_table(results: dict) -> str:
  """The table in Markdown, paper numbers beside ours.

  Args:
    results: from :func:`assemble`.

  Returns:
    A Markdown table.
  """
  lines = [
    "| method | batches | main steps | original-data MSE (ours) | new-data MSE "
    "(ours) | original (paper) | new (paper) |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for entry in results["table"]:
    lines.append(
      f"| {entry['label']} | {entry['batches']} | {entry['main_steps']} | "
      f"{_fmt(entry['old_error'])} | {_fmt(entry['new_error'])} | "
      f"{entry['paper']['old_error']:g} | {entry['paper']['new_error']:g} |"
    )
  return "\n".join(lines)


def format_sweep(results: dict) -> str:
  """Final errors of every run (table and sweep), one line each.

  Args:
    results: from :func:`assemble`.

  Returns:
    A multi-line string.
  """
  lines = ["All runs (final errors, mean ± s.e. over seeds):"]
  for name, run in results["runs"].items():
    extra = ""
    if "projected_fraction" in run:
      extra = (
        f"  projected {100 * run['projected_fraction']:.0f}% of main steps, "
        f"median |delta| {run['delta_norm_median']:.1e}"
      )
    lines.append(
      f"  {name:<34} batches {run['batches']:>5}  original "
      f"{_fmt(run['old_error'])}  new {_fmt(run['new_error'])}{extra}"
    )
  return "\n".join(lines)
