"""Aggregation over seeds and the Table-1-style table (text and Markdown)."""

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from examples.common import frontier as common_frontier

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


#: Per-evaluation errors of a curve: test sets, then held-out sets.
ERROR_KEYS = ("old_error", "new_error", "old_val", "new_val")
#: The frontier's families, in table order.
FAMILIES = ("full", "l2sp", "wise_full", "head", "profit", "wise_profit")
FAMILY_LABELS = {
  "full": "full FT (its lrs)",
  "l2sp": "L2-SP (its alphas)",
  "wise_full": "WiSE-FT of full FT",
  "head": "head only",
  "profit": "PROFIT (its lrs, ratios)",
  "wise_profit": "WiSE-FT of PROFIT",
}


def _mean_curve(records: Sequence[dict]) -> dict[str, list]:
  curves = [r["curve"] for r in records]
  out = {"batches": curves[0]["batches"], "main_steps": curves[0]["main_steps"]}
  for key in ERROR_KEYS:
    out[key] = np.mean([c[key] for c in curves], axis=0).tolist()
  return out


def _mean_wise(records: Sequence[dict]) -> dict[str, list]:
  out = {"a": records[0]["wise"]["a"]}
  for key in ERROR_KEYS:
    out[key] = np.mean([r["wise"][key] for r in records], axis=0).tolist()
  return out


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
  runs: dict[str, list[dict]],
) -> dict:
  """Builds the results dict (JSON-ready) from the per-seed records.

  Args:
    config: the configuration (a dataclass).
    specs: the runs (``RunSpec``), table and sweep.
    table_runs: table row -> run name.
    base_info: per seed, how the base model was obtained and its errors
      (``old_error``, ``new_error``, ``old_val``, ``new_val``).
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
    if "wise" in records[0]:
      summary["mean_wise"] = _mean_wise(records)
    if "diagnostics" in records[0]:
      summary["diagnostics"] = {
        key: float(np.mean([r["diagnostics"][key] for r in records]))
        for key in records[0]["diagnostics"]
      }
    run_summaries[spec.name] = summary
  table = [
    {
      "row": "baseline",
      "label": _label("baseline", None, config),
      "run": None,
      "batches": config.base_steps,
      "main_steps": config.base_steps,
      "old_error": mean_and_se([b["old_error"] for b in base_info]),
      "new_error": mean_and_se([b["new_error"] for b in base_info]),
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


def candidates(results: dict, batch_size: int, budget: int) -> list[dict]:
  """Every point of every curve at ``batch_size`` within ``budget`` batches.

  A point is one evaluation of a run after it started (its batches and its
  per-seed errors), or one WiSE-FT interpolation ``a > 0`` of a run that
  consumed at most ``budget`` batches (the interpolation costs no batches).

  Args:
    results: from :func:`assemble`.
    batch_size: the fine-tuning batch size.
    budget: the most batches (forward/backward passes) a point may have used.

  Returns:
    Dicts ``{"family", "point", "batches", key: [per-seed values] for key in
    ERROR_KEYS}``.
  """
  out = []
  for name, run in results["runs"].items():
    if run["batch_size"] != batch_size:
      continue
    seeds = run["per_seed"]
    curve = seeds[0]["curve"]
    for j, batches in enumerate(curve["batches"]):
      if j == 0 or batches > budget:
        continue
      point = {
        "family": run["method"],
        "point": f"{name} @ {batches}",
        "batches": batches,
      }
      point.update({k: [s["curve"][k][j] for s in seeds] for k in ERROR_KEYS})
      out.append(point)
    if "wise" not in seeds[0] or run["batches"] > budget:
      continue
    for j, a in enumerate(seeds[0]["wise"]["a"]):
      if a == 0.0:
        continue
      point = {
        "family": f"wise_{run['method']}",
        "point": f"{name} @ {run['batches']}, a={a:g}",
        "batches": run["batches"],
      }
      point.update({k: [s["wise"][k][j] for s in seeds] for k in ERROR_KEYS})
      out.append(point)
  return out


def select_frontier(
  points: Sequence[dict],
  base_old_val: Sequence[float],
  base_old_test: Sequence[float],
  levels: Sequence[float],
) -> list[dict]:
  """The best new-data error of each family at each old-data level.

  The rule of ``examples.common.frontier``, the same for every family: among
  the family's points whose held-out original-data MSE, as a multiple of the
  base model's (per seed, then averaged over seeds), is at most the level,
  take the one with the lowest held-out new-data MSE (mean over seeds; ties:
  the lower ratio, then the fewer batches); report its *test* errors,
  mean and standard error over seeds. One point (setting, stopping time,
  mixing coefficient) serves all seeds, as a practitioner's choice would.

  Args:
    points: from :func:`candidates` (or hand-made, same keys).
    base_old_val: per seed, the base model's held-out original-data MSE.
    base_old_test: per seed, the base model's test original-data MSE.
    levels: multiples of the base model's original-data MSE.

  Returns:
    Per level ``{"level", family: None or {"point", "batches", "new_error",
    "old_ratio"}}``, ``new_error`` and ``old_ratio`` (test original-data MSE
    over the base model's) as :func:`mean_and_se` dicts.
  """
  base_val = np.asarray(base_old_val, np.float64)
  base_test = np.asarray(base_old_test, np.float64)
  rows = []
  for level in levels:
    row: dict[str, Any] = {"level": float(level)}
    for family in FAMILIES:
      # The common rule on scores (higher is better): the negated errors.
      point = common_frontier.select(
        [p for p in points if p["family"] == family],
        -float(level),
        old=lambda p: -float(np.mean(np.asarray(p["old_val"]) / base_val)),
        new=lambda p: -float(np.mean(p["new_val"])),
        batches=lambda p: p.get("batches", 0),
      )
      if point is None:
        row[family] = None
        continue
      row[family] = {
        "point": point["point"],
        "batches": point["batches"],
        "new_error": mean_and_se(point["new_error"]),
        "old_ratio": mean_and_se(np.asarray(point["old_error"]) / base_test),
      }
    rows.append(row)
  return rows


def frontier(results: dict) -> dict[str, dict]:
  """:func:`select_frontier` at every fine-tuning batch size of the sweep.

  Every family gets the same budget: ``ft_steps`` batches.

  Args:
    results: from :func:`assemble`.

  Returns:
    ``{str(batch_size): {"budget", "rows"}}``.
  """
  config = results["config"]
  budget = config["ft_steps"]
  base_val = [b["old_val"] for b in results["base_models"]]
  base_test = [b["old_error"] for b in results["base_models"]]
  sizes = config["batch_sizes"] or [config["batch_size"]]
  out = {}
  for bs in sizes:
    points = candidates(results, bs, budget)
    out[str(bs)] = {
      "budget": budget,
      "rows": select_frontier(points, base_val, base_test, config["frontier_levels"]),
    }
  return out


def diagnostics_summary(results: dict) -> list[dict]:
  """PROFIT's logged diagnostics per run, mean over seeds.

  Args:
    results: from :func:`assemble`.

  Returns:
    One dict per PROFIT run: its name, batch size, lr, ratio, batches, final
    test errors and the means of ``removed_fraction``, ``cosine``,
    ``projected`` and ``delta_norm`` (over all main steps, ``_early``: the
    first tenth, ``_late``: the second half).
  """
  out = []
  for name, run in results["runs"].items():
    if "diagnostics" not in run:
      continue
    out.append(
      {
        "run": name,
        "batch_size": run["batch_size"],
        "lr": run["lr"],
        "ratio": run["ratio"],
        "batches": run["batches"],
        "old_error": run["old_error"]["mean"],
        "new_error": run["new_error"]["mean"],
        **run["diagnostics"],
      }
    )
  return out


def _cell(entry: dict | None) -> str:
  if entry is None:
    return "–"
  new, ratio = entry["new_error"], entry["old_ratio"]
  text = _fmt(new, 3)
  return f"{text} ({ratio['mean']:.2f}x)"


def markdown_frontier(results: dict) -> str:
  """The frontier tables (one per batch size) in Markdown.

  Args:
    results: with a ``"frontier"`` entry.

  Returns:
    Markdown text.
  """
  blocks = []
  for bs, block in results["frontier"].items():
    lines = [
      f"Batch size {bs}, budget {block['budget']} batches: best test new-data "
      "MSE (mean ± s.e. over seeds; in brackets the test original-data MSE as a "
      "multiple of the base model's), selected on the held-out sets:",
      "",
      "| old-data MSE ≤ | " + " | ".join(FAMILY_LABELS[f] for f in FAMILIES) + " |",
      "|---:|" + "---:|" * len(FAMILIES),
    ]
    for row in block["rows"]:
      cells = [_cell(row[f]) for f in FAMILIES]
      lines.append(f"| {row['level']:g}x base | " + " | ".join(cells) + " |")
    blocks.append("\n".join(lines))
  return "\n\n".join(blocks)


def format_frontier(results: dict) -> str:
  """The frontier tables and the chosen points as text.

  Args:
    results: with a ``"frontier"`` entry.

  Returns:
    A multi-line string.
  """
  lines = [markdown_frontier(results), "", "Chosen points:"]
  for bs, block in results["frontier"].items():
    for row in block["rows"]:
      for family in FAMILIES:
        if row[family] is not None:
          lines.append(
            f"  bs {bs}, old <= {row['level']:g}x, {family}: {row[family]['point']}"
          )
  return "\n".join(lines)


def markdown_diagnostics(results: dict) -> str:
  """PROFIT's diagnostics per run in Markdown.

  Args:
    results: with a ``"diagnostics"`` entry.

  Returns:
    Markdown text.
  """
  lines = [
    "| batch size | PROFIT run | old / new test MSE | removed fraction (all / "
    "first 10 % / 2nd half) | cos(g, delta) (all / first 10 % / 2nd half) | "
    "projected |",
    "|---:|---|---:|---:|---:|---:|",
  ]
  for d in results["diagnostics"]:
    lines.append(
      f"| {d['batch_size']} | lr {d['lr']:g}, ratio {d['ratio']:g}, "
      f"{d['batches']} batches | {d['old_error']:.3f} / {d['new_error']:.3f} | "
      f"{d['removed_fraction']:.3f} / {d['removed_fraction_early']:.3f} / "
      f"{d['removed_fraction_late']:.3f} | {d['cosine']:+.3f} / "
      f"{d['cosine_early']:+.3f} / {d['cosine_late']:+.3f} | "
      f"{100 * d['projected']:.0f} % |"
    )
  return "\n".join(lines)


def markdown_report(results: dict) -> str:
  """Table, frontier and diagnostics in Markdown (``table.md``)."""
  parts = [markdown_table(results)]
  if results.get("frontier"):
    parts.append(markdown_frontier(results))
  if results.get("diagnostics"):
    parts.append(markdown_diagnostics(results))
  return "\n\n".join(parts)


def _fmt(stat: dict, digits: int = 4) -> str:
  mean, se = stat["mean"], stat["se"]
  if se is None:
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} ± {se:.{digits}f}"


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
    if "diagnostics" in run:
      d = run["diagnostics"]
      extra = (
        f"  projected {100 * d['projected']:.0f}% of main steps, removed "
        f"{d['removed_fraction']:.3f}, cos(g, delta) {d['cosine']:+.3f}"
      )
    lines.append(
      f"  {name:<40} batches {run['batches']:>5}  original "
      f"{_fmt(run['old_error'])}  new {_fmt(run['new_error'])}{extra}"
    )
  return "\n".join(lines)
