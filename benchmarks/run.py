"""Runs the benchmarks and writes ``RESULTS.md``: ``python -m benchmarks.run``.

Sections: the optimizer update alone (1M, 10M, 50M params), the whole train
step on real models, memory (state bytes, compiled memory, GPU peaks) and the
drift of ``delta_dtype`` storage on the toy model. Every ratio is measured in
the same process, candidates interleaved (see ``benchmarks/timing.py``).

Flags:
  --quick: small sizes and few rounds (a smoke run of a few minutes).
  --only: comma-separated sections among update,train,drift.
  --out: the Markdown file to write (default ``benchmarks/RESULTS.md``, or
    ``results/benchmarks/RESULTS_quick.md`` with ``--quick``).
  --json: also dump the raw numbers there.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
import traceback
from typing import Any

import flax
import jax
import optax

import optax_profit
from benchmarks import drift, models, train_step, update

MB = 1e6

SECTIONS = ("update", "train", "drift")


def _cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def machine() -> list[str]:
  """Lines describing the machine and the versions."""
  dev = jax.devices()[0]
  load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
  return [
    f"- Device: {jax.default_backend()} `{dev.device_kind}` x {jax.device_count()}",
    f"- CPU: {_cpu_model()}, {os.cpu_count()} cores; load average at start "
    f"{load[0]:.2f}",
    f"- Python {platform.python_version()}, jax {jax.__version__}, jaxlib "
    f"{jax.lib.__version__ if hasattr(jax.lib, '__version__') else '?'}, "
    f"optax {optax.__version__}, flax {flax.__version__}, optax-profit "
    f"{optax_profit.__version__}",
  ]


def _ms(t) -> str:
  return f"{t.median * 1e3:.3g} ({100 * t.spread():.0f}%)"


def _mb(x: float) -> str:
  return f"{x / MB:.1f}"


def _update_total(m: dict[str, int]) -> int:
  """Params + state arguments, temporaries and unaliased outputs."""
  return m["arguments"] - m["inputs"] + m["temporaries"] + m["outputs"] - m["aliased"]


UPDATE_INTRO = {
  "per-call": (
    "Per-call `update`, the gradient made inside the jitted step "
    "(`g = params * t`), `apply_updates`; params and state donated; PROFIT "
    "timed over whole cycles. `default` is what `profit` picks on this "
    "platform; `select`, `in-place` and `lax.cond` force a per-call driver; "
    "`unordered` is the default without the reduction-before-write "
    "ordering (`_xla_cpu.never`); `plain sums` without XLA:CPU's one-pass "
    "reduction of omega and the norms (as GPU/TPU lower it)."
  ),
  "make_train_step": (
    "`make_train_step` with the linear loss `sum(params * batch)` (its "
    "gradient is the batch), one call per cycle of stacked batches; "
    "PROFIT runs the static cycle, `adamw` and `sgd` a scan of per-batch "
    "steps over the same batches; `unordered` and `plain sums` as above."
  ),
}


def update_tables(res: dict) -> list[str]:
  sizes = sorted(res)
  out = []
  for path in ("per-call", "make_train_step"):
    names = list(res[sizes[0]][path]["timings"])
    out += [
      f"### Optimizer update per batch: {path}",
      "",
      UPDATE_INTRO[path] + " ms per batch, median over rounds "
      "(interquartile spread in %), and the ratio to `adamw` through the "
      "same path.",
      "",
      "| candidate | "
      + " | ".join(f"{s / 1e6:g}M params: ms | ratio" for s in sizes)
      + " |",
      "|---|" + "---|---|" * len(sizes),
    ]
    for name in names:
      cells = []
      for s in sizes:
        t = res[s][path]["timings"][name]
        base = res[s][path]["timings"]["adamw"].median
        cells += [_ms(t), f"{t.median / base:.2f}x"]
      out.append(f"| {name} | " + " | ".join(cells) + " |")
    s = sizes[-1]
    pb = res[s]["param_bytes"]
    mem = res[s][path]["memory"]
    out += [
      "",
      f"Memory at {s / 1e6:g}M params (one params copy = {_mb(pb)} MB), in "
      "params copies: optimizer state counted from the pytree; compiled "
      "memory from `memory_analysis()`: params and state arguments (stacked "
      "batches left out), temporaries, outputs not aliased to a donated "
      "argument; total = the three.",
      "",
      "| candidate | optimizer state | params + state arguments | temporaries | unaliased outputs | total | total - adamw's |",
      "|---|---|---|---|---|---|---|",
    ]
    for name in names:
      m = mem[name]
      total = _update_total(m)
      out.append(
        f"| {name} | {res[s][path]['state_bytes'][name] / pb:.2f} | "
        f"{(m['arguments'] - m['inputs']) / pb:.2f} | "
        f"{m['temporaries'] / pb:.2f} | {(m['outputs'] - m['aliased']) / pb:.2f} | "
        f"{total / pb:.2f} | {(total - _update_total(mem['adamw'])) / pb:+.2f} |"
      )
    out.append("")
  return out


TRAIN_INTRO = (
  "ms per batch (interquartile spread in %); ratios to `adamw, "
  "make_train_step` and to `adamw, loop`; compile time of each step; "
  "compiled temporaries."
)


def train_tables(res: dict) -> list[str]:
  out = []
  for (name, n_ref), r in res.items():
    t = r["timings"]
    base_scan = t["adamw, make_train_step"].median
    base_loop = t["adamw, loop"].median
    out += [
      f"**{name}** ({r['params'] / 1e6:.2f}M params), n_ref={n_ref}",
      "",
      "| candidate | ms per batch | vs adamw make_train_step | vs adamw loop | compile s | temporaries MB |",
      "|---|---|---|---|---|---|",
    ]
    for cand, timing_ in t.items():
      out.append(
        f"| {cand} | {_ms(timing_)} | {timing_.median / base_scan:.3f}x | "
        f"{timing_.median / base_loop:.3f}x | {r['compile_s'][cand]:.1f} | "
        f"{_mb(r['memory'][cand]['temporaries'])} |"
      )
    out.append("")
  return out


def drift_tables(res: dict) -> list[str]:
  out = [
    "### Storage: distance to the float64 algorithm on the toy model",
    "",
    f"Model from {res['source']}; base: {res['base_steps']} RMSProp steps "
    f"on the original domain; fine-tuning: {res['cycles']} PROFIT cycles "
    "(n_ref=1, RMSProp 5e-4, ref = main / 100, both x0.95 every 100 steps) "
    "from the same base and batches. Differences to the reference (copy "
    "storage with float64 params): max |params - reference| and "
    "||params - reference|| / ||reference - base|| (0: on the reference, "
    "1: as far from it as the whole fine-tuning moved). For scale, the "
    f"fine-tuning moved a weight by up to {res['max_abs_update']:.3g}; the "
    f"largest weight is {res['max_abs_param']:.3g}. bfloat16 vs float32 "
    f"delta storage: max |diff| {res['bf16_vs_f32_delta']:.3g}.",
    "",
    "| run | max abs diff | relative L2 diff | old-domain test MSE | new-domain test MSE |",
    "|---|---|---|---|---|",
    f"| base model | - | - | {res['errors']['base']['old_test']:.4f} | "
    f"{res['errors']['base']['new_test']:.4f} |",
  ]
  for k, v in res["max_abs_diff"].items():
    e = res["errors"][k]
    out.append(
      f"| {k} | {v:.3g} | {res['rel_l2_diff'][k]:.3g} | {e['old_test']:.4f} | "
      f"{e['new_test']:.4f} |"
    )
  return out


def target_lines(upd: dict | None, trn: dict | None) -> list[str]:
  """The targets, checked against this run's numbers."""
  out = ["### Targets", ""]
  if upd:
    for s in sorted(upd):
      if s < 5e6:
        continue
      for path, limit, names in (
        ("per-call", 2.0, ["profit n_ref=1"]),
        ("make_train_step", 1.15, ["profit n_ref=1", "profit n_ref=3"]),
      ):
        t = upd[s][path]["timings"]
        worst = max(t[n].median / t["adamw"].median for n in names if n in t)
        ok = "met" if worst <= limit else "missed"
        out.append(
          f"- {path} update per batch <= {limit}x adamw at {s / 1e6:g}M: "
          f"{worst:.2f}x (worst of {', '.join(names)}): **{ok}**"
        )
    s = max(upd)
    pb = upd[s]["param_bytes"]
    mem = upd[s]["make_train_step"]["memory"]
    for name, limit in (("profit n_ref=1", 1.0), ("profit n_ref=1, delta bf16", 0.5)):
      extra = (_update_total(mem[name]) - _update_total(mem["adamw"])) / pb
      out.append(
        f"- make_train_step memory, {name} at {s / 1e6:g}M: adamw's + "
        f"{extra:.2f} params copies (target <= +{limit}): "
        f"**{'met' if extra <= limit + 0.01 else 'missed'}**"
      )
  if trn:
    for (name, n_ref), r in trn.items():
      t = r["timings"]
      scan = t["profit, make_train_step"].median
      if name.startswith("cnn"):
        ratio = scan / t["adamw, make_train_step"].median
        out.append(
          f"- Train step on {name} (n_ref={n_ref}) <= 1.03x adamw: "
          f"make_train_step {ratio:.3f}x vs adamw make_train_step "
          f"({scan / t['adamw, loop'].median:.3f}x vs adamw loop): "
          f"**{'met' if ratio <= 1.03 else 'missed'}**"
        )
      loop = t["profit, loop"].median
      out.append(
        f"- make_train_step at least as fast as the per-batch loop, {name} "
        f"(n_ref={n_ref}): {scan / loop:.3f}x of the loop: "
        f"**{'met' if scan <= loop * 1.0 else 'missed'}**"
      )
  return out


def _gpu_peaks(sizes: list[int], workloads: list[str]) -> list[str]:
  """Peak device memory per candidate, one fresh process each."""
  rows = []
  cands = [
    ("update", str(s), n)
    for s in sizes
    for n in (
      "adamw",
      "profit n_ref=1, update()",
      "profit n_ref=1, cycle",
      "profit n_ref=1, cycle, delta bf16",
    )
  ]
  cands += [("train", w, n) for w in workloads for n in ("adamw", "profit")]
  for kind, what, name in cands:
    proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.peak", kind, what, name],
      capture_output=True,
      text=True,
      check=False,
    )
    try:
      peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"]
    except (IndexError, ValueError, KeyError):
      peak = None
      print(proc.stderr[-2000:], file=sys.stderr)
    rows.append((kind, what, name, peak))
  out = [
    "### GPU peak memory (fresh process per candidate)",
    "",
    "`peak_bytes_in_use` after 4 steps (params, state and inputs included).",
    "",
    "| what | candidate | peak MB |",
    "|---|---|---|",
  ]
  for kind, what, name, peak in rows:
    label = (
      f"update, {int(what) / 1e6:g}M params"
      if kind == "update"
      else f"train step, {what}"
    )
    out.append(f"| {label} | {name} | {'-' if peak is None else _mb(peak)} |")
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--only", default=",".join(SECTIONS))
  parser.add_argument("--out", default=None)
  parser.add_argument("--json", default=None)
  parser.add_argument("--rounds", type=int, default=None)
  parser.add_argument(
    "--models",
    default=None,
    help="train-step models among cnn,transformer,resnet18,transformer_large "
    "(default: cnn,transformer; on GPU also resnet18,transformer_large)",
  )
  parser.add_argument(
    "--n-refs", default=None, help="n_ref values of the train step (default 1,3)"
  )
  parser.add_argument(
    "--sizes", default=None, help="update sizes in params (default 1e6,1e7,5e7)"
  )
  parser.add_argument(
    "--peak-sizes",
    default="",
    help="GPU only: update sizes whose peak memory to measure (fresh processes)",
  )
  parser.add_argument(
    "--peak-models",
    default="",
    help="GPU only: train-step models whose peak memory to measure",
  )
  args = parser.parse_args(argv)
  only = [s.strip() for s in args.only.split(",") if s.strip()]
  bad = sorted(set(only) - set(SECTIONS))
  if bad:
    parser.error(f"--only: unknown sections {bad}; choose among {SECTIONS}")
  out_path = pathlib.Path(
    args.out
    or (
      "results/benchmarks/RESULTS_quick.md" if args.quick else "benchmarks/RESULTS.md"
    )
  )
  gpu = jax.default_backend() == "gpu"
  start = time.time()
  command = "python -m benchmarks.run " + " ".join(
    argv if argv is not None else sys.argv[1:]
  )
  lines = [
    "# Benchmark results",
    "",
    f"Command: `{command.strip()}`, run {datetime.datetime.now():%Y-%m-%d %H:%M}.",
    "",
    *machine(),
    "",
  ]
  raw: dict[str, Any] = {}
  upd: dict | None = None
  trn: dict = {}

  def write(final: bool = False) -> None:
    """Writes what is done so far (a failed or cut run keeps its tables)."""
    body = list(lines)
    if upd or trn:
      body += [*target_lines(upd, trn), ""]
    body += tail
    if not final:
      body += ["(run in progress)", ""]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(body))
    if args.json:
      pathlib.Path(args.json).write_text(json.dumps(raw, indent=1, default=str))

  def section(name, fn):
    try:
      fn()
    except Exception:  # keep the other sections' results
      err = traceback.format_exc()
      print(err, file=sys.stderr, flush=True)
      lines.extend([f"Section {name} failed:", "", "```", err[-3000:], "```", ""])
    write()

  tail: list[str] = []

  def run_update():
    nonlocal upd
    sizes = [1_000_000] if args.quick else [1_000_000, 10_000_000, 50_000_000]
    if args.sizes:
      sizes = [int(float(x)) for x in args.sizes.split(",")]
    rounds = args.rounds or (3 if args.quick else 12)
    print(f"update: sizes {sizes}, {rounds} rounds", flush=True)
    upd = update.run(sizes, rounds=rounds)
    lines.extend([*update_tables(upd), ""])
    raw["update"] = {
      f"{s} {path}": {k: v.median for k, v in r[path]["timings"].items()}
      for s, r in upd.items()
      for path in ("per-call", "make_train_step")
    }

  def run_train(name):
    factories = {
      "cnn": models.cnn,
      "transformer": models.transformer,
      "resnet18": models.resnet18,
      "transformer_large": lambda: models.transformer(32, dim=512, depth=8),
    }
    n_refs = [1] if args.quick else [1, 3]
    if args.n_refs:
      n_refs = [int(x) for x in args.n_refs.split(",")]
    rounds = args.rounds or (2 if args.quick else 8)
    print(f"train: {name}, n_ref {n_refs}", flush=True)
    res = train_step.run([factories[name]()], n_refs, rounds=rounds)
    trn.update(res)
    lines.extend(train_tables(res))
    raw.setdefault("train", {}).update(
      {
        f"{n} n_ref={k}": {c: t.median for c, t in r["timings"].items()}
        for (n, k), r in res.items()
      }
    )

  def run_peaks():
    tail.extend(
      [
        *_gpu_peaks(
          [int(float(x)) for x in args.peak_sizes.split(",") if x],
          [x for x in args.peak_models.split(",") if x],
        ),
        "",
      ]
    )

  def run_drift():
    print("drift", flush=True)
    res = drift.run(
      base_steps=1_000 if args.quick else 10_000,
      cycles=100 if args.quick else 1_000,
    )
    lines.extend([*drift_tables(res), ""])
    raw["drift"] = res

  if "update" in only:
    section("update", run_update)
  if "train" in only:
    names = (
      args.models.split(",")
      if args.models
      else ["cnn", "transformer"] + (["resnet18", "transformer_large"] if gpu else [])
    )
    lines.extend(["### Whole train step, per batch", "", TRAIN_INTRO, ""])
    for name in names:
      section(f"train {name}", lambda name=name: run_train(name))
  if gpu and (args.peak_sizes or args.peak_models):
    section("peaks", run_peaks)
  if "drift" in only:
    section("drift", run_drift)
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  tail.extend(
    [f"Wall time {time.time() - start:.0f} s; load average at the end {load:.2f}.", ""]
  )
  write(final=True)
  print(out_path.read_text())
  print(f"wrote {out_path}")


if __name__ == "__main__":
  main()
