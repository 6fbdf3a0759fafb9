"""Aggregation over seeds, the frontier and the tables (text and Markdown)."""

import dataclasses
import itertools
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
#: Per-evaluation errors of a curve: test sets, then held-out sets.
ERROR_KEYS = ("old_error", "new_error", "old_val", "new_val")
#: The frontier's families and their column titles, in table order.
FAMILY_LABELS = {
  "full": "full FT (its lrs)",
  "l2sp": "L2-SP (its alphas)",
  "wise_full": "WiSE-FT of full FT",
  "head": "head only",
  "profit": "PROFIT (its lrs, ratios)",
  "wise_profit": "WiSE-FT of PROFIT",
}
FAMILIES = tuple(FAMILY_LABELS)
STAT_KEYS = ("batches", "main_steps", "old_error", "new_error")


def mean_and_se(values: Sequence[float]) -> dict[str, float]:
  """Mean and standard error (None for one value) over seeds."""
  array = np.asarray(values, np.float64)
  se = float(array.std(ddof=1) / np.sqrt(array.size)) if array.size > 1 else None
  return {"mean": float(array.mean()), "se": se, "n": int(array.size)}


def _mean(parts: Sequence[dict], *keep: str) -> dict[str, list]:
  means = {k: np.mean([p[k] for p in parts], axis=0).tolist() for k in ERROR_KEYS}
  return {k: parts[0][k] for k in keep} | means


def _label(row: str, run: dict, config: Any) -> str:
  if row == "baseline":
    return "Baseline (original data only)"
  if row in ("full", "head"):
    model = {"full": "full model", "head": "head only"}[row]
    return f"Fine-tune, {model} (lr {config.ft_lr:g})"
  matched = ", compute-matched" if row == "profit_batches" else ""
  cycles = f"{run['main_steps']} cycles = {run['batches']} batches{matched}"
  return f"PROFIT, {cycles} (ratio {config.ratio:g})"


def _summary(spec: Any, records: list[dict]) -> dict:
  summary = dataclasses.asdict(spec) | {k: records[0][k] for k in STAT_KEYS[:2]}
  for key in STAT_KEYS[2:]:
    summary[key] = mean_and_se([r[key] for r in records])
  summary["mean_curve"] = _mean([r["curve"] for r in records], *STAT_KEYS[:2])
  summary["per_seed"] = records
  if "wise" in records[0]:
    summary["mean_wise"] = _mean([r["wise"] for r in records], "a")
  if "diagnostics" in records[0]:
    keys = records[0]["diagnostics"]
    d = [r["diagnostics"] for r in records]
    summary["diagnostics"] = {k: float(np.mean([x[k] for x in d])) for k in keys}
  return summary


def assemble(config, specs, table_runs: dict, base_info: list, runs: dict) -> dict:
  """The results dict (JSON-ready) from the base models' errors (per seed), the
  per-seed records of every run (by name) and the table's runs (row -> name)."""
  summaries = {spec.name: _summary(spec, runs[spec.name]) for spec in specs}
  base = dict.fromkeys(STAT_KEYS[:2], config.base_steps)
  for key in STAT_KEYS[2:]:
    base[key] = mean_and_se([b[key] for b in base_info])
  table = []
  for row, name in {"baseline": None, **table_runs}.items():
    run = base if name is None else summaries[name]
    paper = PAPER_TABLE1[row.split("_")[0]]
    table.append(
      {"row": row, "label": _label(row, run, config), "run": name}
      | {k: run[k] for k in STAT_KEYS}
      | {"paper": dict(zip(("old_error", "new_error"), paper, strict=True))}
    )
  results = {"config": dataclasses.asdict(config), "paper_table1": PAPER_TABLE1}
  results |= {"seeds": list(config.seeds), "base_models": base_info}
  results = json.loads(json.dumps(results | {"runs": summaries, "table": table}))
  results["frontier"] = frontier(results)
  results["diagnostics"] = diagnostics_summary(results)
  return results


def candidates(results: dict, batch_size: int, budget: int) -> list[dict]:
  """The points at ``batch_size`` within ``budget`` batches: a run's evaluations
  after its start, WiSE-FT's ``a > 0`` of a run within the budget."""
  out = []
  for name, run in results["runs"].items():
    seeds, method, end = run["per_seed"], run["method"], run["batches"]
    if run["batch_size"] != batch_size:
      continue
    batches = seeds[0]["curve"]["batches"]
    found = [(method, f"{name} @ {b}", b, "curve", j) for j, b in enumerate(batches)]
    found = [p for p in found[1:] if p[2] <= budget]
    if "wise" in seeds[0] and end <= budget:
      for j, a in enumerate(seeds[0]["wise"]["a"]):
        if a != 0.0:
          found.append((f"wise_{method}", f"{name} @ {end}, a={a:g}", end, "wise", j))
    for family, point, batches, part, j in found:
      errors = {k: [s[part][k][j] for s in seeds] for k in ERROR_KEYS}
      out.append({"family": family, "point": point, "batches": batches} | errors)
  return out


def select_frontier(points, base_old_val, base_old_test, levels) -> list[dict]:
  """Per level and family, the point ``examples.common.frontier`` selects (on
  negated held-out errors; old-data MSE over the base model's, per seed, then
  mean) with its test errors; one point serves all seeds."""
  base_val = np.asarray(base_old_val, np.float64)
  base_test = np.asarray(base_old_test, np.float64)
  rows = []
  for level in levels:
    row: dict[str, Any] = {"level": float(level)}
    for family in FAMILIES:
      point = common_frontier.select(
        [p for p in points if p["family"] == family],
        -float(level),
        old=lambda p: -float(np.mean(np.asarray(p["old_val"]) / base_val)),
        new=lambda p: -float(np.mean(p["new_val"])),
        batches=lambda p: p.get("batches", 0),
      )
      row[family] = point and {
        "point": point["point"],
        "batches": point["batches"],
        "new_error": mean_and_se(point["new_error"]),
        "old_ratio": mean_and_se(np.asarray(point["old_error"]) / base_test),
      }
    rows.append(row)
  return rows


def frontier(results: dict) -> dict[str, dict]:
  """``{str(batch_size): {"budget", "rows"}}``, every family at ``ft_steps``."""
  config = results["config"]
  budget = config["ft_steps"]
  base_val = [b["old_val"] for b in results["base_models"]]
  base_test = [b["old_error"] for b in results["base_models"]]
  out = {}
  for bs in config["batch_sizes"] or [config["batch_size"]]:
    points = candidates(results, bs, budget)
    rows = select_frontier(points, base_val, base_test, config["frontier_levels"])
    out[str(bs)] = {"budget": budget, "rows": rows}
  return out


def diagnostics_summary(results: dict) -> list[dict]:
  """Per PROFIT run: its setting, final errors and mean diagnostics over seeds."""
  return [
    {
      "run": name,
      **{k: run[k] for k in ("batch_size", "lr", "ratio", "batches")},
      "old_error": run["old_error"]["mean"],
      "new_error": run["new_error"]["mean"],
      **run["diagnostics"],
    }
    for name, run in results["runs"].items()
    if "diagnostics" in run
  ]


def _fmt(stat: dict, digits: int = 4) -> str:
  text = f"{stat['mean']:.{digits}f}"
  return text if stat["se"] is None else f"{text} ± {stat['se']:.{digits}f}"


def _md(*cells: Any) -> str:
  return "| " + " | ".join(map(str, cells)) + " |"


def markdown_frontier(results: dict) -> str:
  blocks = []
  for bs, block in results["frontier"].items():
    lines = [
      f"Batch size {bs}, budget {block['budget']} batches: best test new-data "
      "MSE (mean ± s.e. over seeds; in brackets the test original-data MSE as a "
      "multiple of the base model's), selected on the held-out sets:",
      "",
      _md("old-data MSE ≤", *FAMILY_LABELS.values()),
      "|---:|" + "---:|" * len(FAMILIES),
    ]
    for row in block["rows"]:
      cells = [
        (e := row[f]) and f"{_fmt(e['new_error'], 3)} ({e['old_ratio']['mean']:.2f}x)"
        for f in FAMILIES
      ]
      lines.append(_md(f"{row['level']:g}x base", *(c or "–" for c in cells)))
    blocks.append("\n".join(lines))
  return "\n\n".join(blocks)


def format_frontier(results: dict) -> str:
  """The frontier tables and the chosen points as text."""
  lines = [markdown_frontier(results), "", "Chosen points:"]
  for bs, block in results["frontier"].items():
    for row, family in itertools.product(block["rows"], FAMILIES):
      if row[family] is not None:
        point = row[family]["point"]
        lines.append(f"  bs {bs}, old <= {row['level']:g}x, {family}: {point}")
  return "\n".join(lines)


def markdown_diagnostics(results: dict) -> str:
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
  parts += [markdown_frontier(results)] if results.get("frontier") else []
  parts += [markdown_diagnostics(results)] if results.get("diagnostics") else []
  return "\n\n".join(parts)


def markdown_table(results: dict) -> str:
  """The table, ours (mean ± s.e. over seeds) beside the paper's numbers."""
  lines = [
    "| method | batches | main steps | original-data MSE (ours) | new-data MSE "
    "(ours) | original (paper) | new (paper) |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for e in results["table"]:
    ours = [_fmt(e["old_error"]), _fmt(e["new_error"])]
    paper = [f"{v:g}" for v in e["paper"].values()]  # old, new
    lines.append(_md(e["label"], e["batches"], e["main_steps"], *ours, *paper))
  return "\n".join(lines)


def format_table(results: dict) -> str:
  """The table with a title line (the terminal's and the notebook's)."""
  n = len(results["seeds"])
  title = "Toy 2-D regression (paper Table 1): MSE on noise-free test sets, mean ± "
  title += f"standard error over {n} seed{'s' if n > 1 else ''}"
  return f"{title}\n{markdown_table(results)}"


def format_sweep(results: dict) -> str:
  """Final errors of every run (table and sweep), one line each."""
  lines = ["All runs (final errors, mean ± s.e. over seeds):"]
  for name, run in results["runs"].items():
    d, extra = run.get("diagnostics"), ""
    if d:
      extra = (
        f"  projected {100 * d['projected']:.0f}% of main steps, removed "
        f"{d['removed_fraction']:.3f}, cos(g, delta) {d['cosine']:+.3f}"
      )
    errors = f"original {_fmt(run['old_error'])}  new {_fmt(run['new_error'])}"
    lines.append(f"  {name:<40} batches {run['batches']:>5}  {errors}{extra}")
  return "\n".join(lines)
