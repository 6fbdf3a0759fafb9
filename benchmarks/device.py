"""The prepared GPU check: ``python -m benchmarks.device --out DIR``.

One command for the scarce device time (about 15 minutes per lent machine):
it runs within ``--budget-s`` seconds (default 420, well inside 8 minutes on
a bare machine: nothing is downloaded or cached beforehand), writes
``device.md`` and ``device.json`` under ``--out`` and prints a short summary
table last. Sections, in priority order (a section that would not fit in the
budget left is skipped and says so):

1. ``update``: the optimizer update alone at 1M / 10M / 50M params
   (``benchmarks/update.py``): ``sgd``, ``adamw`` and PROFIT per call with
   each driver (``select``, the GPU/TPU default; ``lax.cond``; ``in-place``,
   the CPU loops), ``n_ref=3``, a bfloat16 delta, and the static cycle of
   ``make_train_step``; compiled memory in params copies;
2. ``train``: the whole train step on ResNet-18 and the transformer
   (``benchmarks/train_step.py``): AdamW and PROFIT through a loop of
   per-batch steps (PROFIT's per-call ``update``) and through
   ``make_train_step``, ratios from this process;
3. ``command buffers``: the per-call drivers at 10M again in a fresh process
   with ``--xla_gpu_enable_command_buffer=+CONDITIONAL,+WHILE`` (XLA:GPU may
   then run ``lax.cond`` / ``while`` predicates on the device);
4. ``peaks``: peak device memory of the update, a fresh process per
   candidate (``benchmarks/peak.py``).

``--smoke`` runs the same code at tiny sizes on any backend in seconds (the
test suite runs it), so the command cannot rot between GPU runs.

The GPU targets (issue 19): per-call training loop <= 1.05x AdamW's loop on
ResNet-18 and <= 1.10x on the transformer; static cycle <= 1.03x AdamW's
``make_train_step`` on ResNet-18; per-call update memory <= AdamW's + 1
params copy (+0.5 with a bfloat16 delta).
"""

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import flax
import jax
import jaxlib
import optax

import optax_profit
from benchmarks import models, run, timing, train_step, update

UPDATE_NAMES = frozenset(
  {
    "profit n_ref=1",
    "profit n_ref=1, select",
    "profit n_ref=1, lax.cond",
    "profit n_ref=1, in-place",
    "profit n_ref=1, delta bf16",
    "profit n_ref=3",
  }
)
TRAIN_NAMES = frozenset({"profit, loop", "profit, make_train_step"})
COMMAND_BUFFER_FLAG = "--xla_gpu_enable_command_buffer=+CONDITIONAL,+WHILE"
COMMAND_BUFFER_NAMES = frozenset(
  {"profit n_ref=1, select", "profit n_ref=1, lax.cond", "profit n_ref=1, in-place"}
)
SMOKE_NOTE = "Smoke run (tiny sizes): the verdicts below measure nothing."
PEAK_NAMES = (
  "adamw",
  "profit n_ref=1, update()",
  "profit n_ref=1, update(), delta bf16",
  "profit n_ref=1, cycle",
)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Sizes of one run of the check.

  Attributes:
    sizes: update sizes (total params).
    command_buffer_size: the size of the command-buffer section.
    peak_size: the size of the peak-memory section.
    rounds: timing rounds of the update.
    train_rounds: timing rounds of the train step.
    workloads: ``(name, factory)`` of the train-step models.
    peak_names: the candidates of the peak-memory section.
    estimates: seconds each section is expected to take on a GPU (a section
      starts only if it fits in the budget left).
  """

  sizes: tuple[int, ...]
  command_buffer_size: int
  peak_size: int
  rounds: int
  train_rounds: int
  workloads: tuple[tuple[str, Callable[[], models.Workload]], ...]
  peak_names: tuple[str, ...]
  estimates: dict[str, float]


FULL = Plan(
  sizes=(1_000_000, 10_000_000, 50_000_000),
  command_buffer_size=10_000_000,
  peak_size=50_000_000,
  rounds=5,
  train_rounds=4,
  workloads=(("resnet18", models.resnet18), ("transformer", models.transformer)),
  peak_names=PEAK_NAMES,
  estimates={"update": 150, "train": 150, "command buffers": 60, "peaks": 80},
)
SMOKE = Plan(
  sizes=(20_000,),
  command_buffer_size=20_000,
  peak_size=20_000,
  rounds=1,
  train_rounds=1,
  workloads=(
    ("resnet18", lambda: models.resnet18(4, stage_sizes=(1,), width=4)),
    ("transformer", lambda: models.transformer(2, dim=32, depth=1, seq_len=8)),
  ),
  peak_names=("profit n_ref=1, cycle",),  # the other paths are the update's
  estimates={"update": 0, "train": 0, "command buffers": 0, "peaks": 0},
)


def environment(commit: str | None) -> dict[str, Any]:
  """Device, driver, versions and commit."""
  dev = jax.devices()[0]
  try:
    driver = subprocess.run(
      ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
      capture_output=True,
      text=True,
      timeout=20,
      check=True,
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    driver = "-"
  if commit is None:
    try:
      commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
      ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
      commit = "unknown"
  return {
    "backend": jax.default_backend(),
    "device": dev.device_kind,
    "device_count": jax.device_count(),
    "driver": driver,
    "python": sys.version.split()[0],
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "optax": optax.__version__,
    "flax": flax.__version__,
    "optax_profit": optax_profit.__version__,
    "commit": commit,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}",
  }


def _timings(timings: dict[str, timing.Timing], base: str) -> dict[str, dict]:
  """Medians, quartiles and the ratio to ``base``, all from one process."""
  ref = timings[base].median
  return {
    name: {
      "median_s": t.median,
      "q25_s": t.q25,
      "q75_s": t.q75,
      "ratio": t.median / ref,
    }
    for name, t in timings.items()
  }


def update_json(res: dict) -> dict:
  """``benchmarks.update.run``'s results as JSON (memory in params copies)."""
  out = {}
  for size, r in res.items():
    copies = lambda b, pb=r["param_bytes"]: b / pb
    out[str(size)] = {
      path: {
        "timings": _timings(r[path]["timings"], "adamw"),
        "memory_copies": {
          name: {
            "state": copies(r[path]["state_bytes"][name]),
            "total": copies(run._update_total(m)),  # pylint: disable=protected-access
            "temporaries": copies(m["temporaries"]),
          }
          for name, m in r[path]["memory"].items()
        },
      }
      for path in ("per-call", "make_train_step")
    }
  return out


def train_json(res: dict) -> dict:
  """``benchmarks.train_step.run``'s results as JSON."""
  out = {}
  for (name, n_ref), r in res.items():
    t = r["timings"]
    out[f"{name} n_ref={n_ref}"] = {
      "params": r["params"],
      "vs adamw loop": _timings(t, "adamw, loop"),
      "vs adamw make_train_step": _timings(t, "adamw, make_train_step"),
      "compile_s": r["compile_s"],
      "temporaries_mb": {k: m["temporaries"] / 1e6 for k, m in r["memory"].items()},
    }
  return out


def _command_buffers(plan: Plan, argv: list[str]) -> dict:
  """The per-call drivers in a fresh process with the command-buffer flag."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {COMMAND_BUFFER_FLAG}".strip()
  proc = subprocess.run(
    [sys.executable, "-m", "benchmarks.device", "--child-update", *argv],
    capture_output=True,
    text=True,
    env=env,
    check=False,
  )
  if proc.returncode:
    raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _peaks(size: int, names: tuple[str, ...]) -> dict[str, float | None]:
  """Peak device bytes of the update candidates, a fresh process each."""
  out = {}
  for name in names:
    proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.peak", "update", str(size), name],
      capture_output=True,
      text=True,
      check=False,
    )
    if proc.returncode:
      raise RuntimeError(f"peak {name} failed:\n{proc.stderr[-3000:]}")
    out[name] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"]
  return out


def _ratio(results: dict, *keys: str) -> float | None:
  """``results[k0][k1]...``, or None where a section did not run."""
  node: Any = results
  for k in keys:
    if not isinstance(node, dict) or k not in node:
      return None
    node = node[k]
  return node


def summary_rows(results: dict, plan: Plan) -> list[tuple[str, str, str, str]]:
  """``(check, target, measured, verdict)`` for each GPU target."""
  rows = []

  def add(check, target, value, limit, unit="x"):
    if value is None:
      rows.append((check, target, "not run", "-"))
    else:
      ok = value <= limit + 1e-9
      rows.append((check, target, f"{value:.3f}{unit}", "met" if ok else "missed"))

  train = results.get("train", {})
  for model, limit in (("resnet18", 1.05), ("transformer", 1.10)):
    key = next((k for k in train if k.startswith(model)), None)
    value = (
      _ratio(train, key, "vs adamw loop", "profit, loop", "ratio") if key else None
    )
    add(f"{model}: PROFIT loop / AdamW loop", f"<= {limit}x", value, limit)
  key = next((k for k in train if k.startswith("resnet18")), None)
  value = (
    _ratio(train, key, "vs adamw make_train_step", "profit, make_train_step", "ratio")
    if key
    else None
  )
  add("resnet18: static cycle / AdamW make_train_step", "<= 1.03x", value, 1.03)
  size = str(max(plan.sizes))
  mem = _ratio(results, "update", size, "per-call", "memory_copies")
  for name, limit in (("profit n_ref=1", 1.0), ("profit n_ref=1, delta bf16", 0.5)):
    extra = mem[name]["total"] - mem["adamw"]["total"] if mem else None
    add(f"per-call update memory, {name}", f"adamw + {limit}", extra, limit, " copies")
  for name in sorted(UPDATE_NAMES):
    value = _ratio(results, "update", size, "per-call", "timings", name, "ratio")
    rows.append(
      (
        f"update alone at {float(size) / 1e6:g}M: {name} / adamw",
        "-",
        "not run" if value is None else f"{value:.2f}x",
        "-",
      )
    )
  return rows


def summary_table(rows: list[tuple[str, str, str, str]]) -> list[str]:
  out = ["| check | target | measured | verdict |", "|---|---|---|---|"]
  return out + [f"| {' | '.join(r)} |" for r in rows]


def markdown(results: dict, env: dict, tables: list[str], rows, command: str) -> str:
  lines = [
    "# Device check",
    "",
    f"Command: `{command}`, run {env['date']}.",
    "",
    f"- Device: {env['backend']} `{env['device']}` x {env['device_count']}, "
    f"driver {env['driver']}",
    f"- Python {env['python']}, jax {env['jax']}, jaxlib {env['jaxlib']}, optax "
    f"{env['optax']}, flax {env['flax']}, optax-profit {env['optax_profit']}, "
    f"commit `{env['commit']}`",
    f"- XLA_FLAGS: `{env['xla_flags'] or '(none)'}`",
    "",
    "## Summary",
    "",
    *([SMOKE_NOTE, ""] if results["smoke"] else []),
    *summary_table(rows),
    "",
    *tables,
  ]
  for name, why in results.get("skipped", {}).items():
    lines.append(f"- Section {name} not run: {why}")
  took = ", ".join(f"{k} {v:.0f} s" for k, v in results["section_s"].items())
  lines.append(f"\nWall time {results['wall_s']:.0f} s ({took}).")
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
  """Runs the check; returns the JSON results."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", help="folder for device.md and device.json")
  parser.add_argument("--smoke", action="store_true", help="tiny sizes, any backend")
  parser.add_argument("--budget-s", type=float, default=420.0)
  parser.add_argument("--commit", default=None, help="default: git rev-parse HEAD")
  parser.add_argument("--child-update", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  plan = SMOKE if args.smoke else FULL
  if args.child_update:  # the command-buffer section's fresh process
    res = update.run(
      [plan.command_buffer_size],
      rounds=plan.rounds,
      n_refs=(1,),
      names=COMMAND_BUFFER_NAMES,
    )
    print(json.dumps(update_json(res)))
    return {}
  if not args.out:
    parser.error("--out is required")
  start = time.monotonic()
  out_dir = pathlib.Path(args.out)
  out_dir.mkdir(parents=True, exist_ok=True)
  command = "python -m benchmarks.device " + " ".join(
    sys.argv[1:] if argv is None else argv
  )
  env = environment(args.commit)
  results: dict[str, Any] = {
    "environment": env,
    "smoke": args.smoke,
    "skipped": {},
    "failed": {},
    "section_s": {},
  }
  tables: list[str] = []

  def section(name: str, fn: Callable[[], None]) -> None:
    left = args.budget_s - (time.monotonic() - start)
    if plan.estimates[name] > left:
      results["skipped"][name] = (
        f"{left:.0f} s of budget left, needs ~{plan.estimates[name]:.0f} s"
      )
      return
    print(f"[device] {name} ({left:.0f} s left)", flush=True)
    began = time.monotonic()
    try:
      fn()
    except Exception:  # keep the other sections' results
      err = traceback.format_exc()
      print(err, file=sys.stderr, flush=True)
      results["failed"][name] = err[-3000:]
      tables.extend([f"Section {name} failed:", "", "```", err[-3000:], "```", ""])
    results["section_s"][name] = time.monotonic() - began

  def run_update():
    res = update.run(list(plan.sizes), rounds=plan.rounds, names=UPDATE_NAMES)
    results["update"] = update_json(res)
    tables.extend(["## Update alone", "", *run.update_tables(res)])

  def run_train():
    res = train_step.run(
      [factory() for _, factory in plan.workloads],
      [1],
      rounds=plan.train_rounds,
      names=TRAIN_NAMES,
    )
    results["train"] = train_json(res)
    tables.extend(
      ["## Whole train step", "", run.TRAIN_INTRO, "", *run.train_tables(res)]
    )

  def run_command_buffers():
    res = _command_buffers(plan, ["--smoke"] if args.smoke else [])
    results["command buffers"] = res
    size, per_call = next(iter(res.items()))
    tables.extend(
      [
        f"## Per-call drivers with `{COMMAND_BUFFER_FLAG}`",
        "",
        f"{float(size) / 1e6:g}M params, a fresh process; ratio to its own adamw.",
        "",
        "| candidate | ms per batch | ratio |",
        "|---|---|---|",
        *(
          f"| {n} | {t['median_s'] * 1e3:.3g} | {t['ratio']:.2f}x |"
          for n, t in per_call["per-call"]["timings"].items()
        ),
        "",
      ]
    )

  def run_peaks():
    peaks = _peaks(plan.peak_size, plan.peak_names)
    results["peaks"] = {"size": plan.peak_size, "peak_bytes": peaks}
    tables.extend(
      [
        f"## Peak device memory of the update, {plan.peak_size / 1e6:g}M params",
        "",
        "`peak_bytes_in_use` after 4 calls, a fresh process each (null on CPU).",
        "",
        "| candidate | peak MB |",
        "|---|---|",
        *(
          f"| {n} | {'-' if b is None else f'{b / 1e6:.1f}'} |"
          for n, b in peaks.items()
        ),
        "",
      ]
    )

  for name, fn in (
    ("update", run_update),
    ("train", run_train),
    ("command buffers", run_command_buffers),
    ("peaks", run_peaks),
  ):
    section(name, fn)
    results["wall_s"] = time.monotonic() - start
    rows = summary_rows(results, plan)
    results["summary"] = [
      dict(zip(("check", "target", "measured", "verdict"), r, strict=True))
      for r in rows
    ]
    (out_dir / "device.json").write_text(json.dumps(results, indent=1))
    (out_dir / "device.md").write_text(markdown(results, env, tables, rows, command))
  print((out_dir / "device.md").read_text())
  print(
    "\n".join(
      [
        f"Summary (device.md, device.json in {out_dir}):",
        *([SMOKE_NOTE] if args.smoke else []),
        *summary_table(rows),
      ]
    )
  )
  return results


if __name__ == "__main__":
  main()
