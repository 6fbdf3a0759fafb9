"""The update before and after Core v2, in one process.

``python -m benchmarks.before_after [--rev 5a65511] [--size 1e7]`` extracts
``optax_profit/`` at git revision ``rev`` (the library before Core v2) into a
temporary package ``optax_profit_before`` and times, interleaved in one
process, per batch, in the settings of ``benchmarks/update.py``: the per-call
update with the gradient made inside the step, and ``make_train_step`` with
the linear loss, for ``optax.adamw``, the old library (its default copy
storage and ``delta_dtype=float32``) and the new one (default storage and
``storage="copy"``). Prints a Markdown table.
"""

import argparse
import importlib
import pathlib
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import optax

import optax_profit
from benchmarks import timing, update

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _old_package(rev: str, where: pathlib.Path):
  """Imports ``optax_profit`` at ``rev`` as ``optax_profit_before``."""
  files = subprocess.run(
    ["git", "ls-tree", "--name-only", rev, "optax_profit/"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=True,
  ).stdout.split()
  pkg = where / "optax_profit_before"
  pkg.mkdir()
  for path in files:
    if not path.endswith(".py"):
      continue
    text = subprocess.run(
      ["git", "show", f"{rev}:{path}"],
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=True,
    ).stdout
    text = text.replace("from optax_profit", "from optax_profit_before")
    (pkg / pathlib.Path(path).name).write_text(text)
  sys.path.insert(0, str(where))
  return importlib.import_module("optax_profit_before")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rev", default="5a65511")
  parser.add_argument("--size", default="1e7")
  parser.add_argument("--rounds", type=int, default=10)
  args = parser.parse_args()
  total = int(float(args.size))
  with tempfile.TemporaryDirectory() as tmp:
    old = _old_package(args.rev, pathlib.Path(tmp))
    params = update.make_params(total)
    t = jnp.float32(1e-3)
    batches = jax.tree.map(lambda p: jnp.stack([1e-3 * p, 2e-3 * p]), params)
    adamw = optax.adamw(1e-3)
    txs = {
      "adamw": adamw,
      "before: default (copy)": old.profit(adamw, ref=1e-4),
      "before: delta_dtype=float32": old.profit(
        adamw, ref=1e-4, delta_dtype=jnp.float32
      ),
      "after: default (delta)": optax_profit.profit(adamw, ref=1e-4),
      "after: storage='copy'": optax_profit.profit(adamw, ref=1e-4, storage="copy"),
    }
    candidates, temps = [], {}
    for path in ("per-call", "make_train_step"):
      for name, tx in txs.items():
        label = f"{name}, {path}"
        holder = timing.Holder(jax.tree.map(jnp.copy, params), tx.init(params))
        if path == "per-call":
          compiled = (
            update.per_call_step(tx).lower(holder.params, holder.state, t).compile()
          )
          args_, calls = (t,), (1 if name == "adamw" else 2)
        else:
          module = old if name.startswith("before") else optax_profit
          step = module.make_train_step(update.linear_loss, tx, cycle_length=2)
          step = getattr(step, "_cycle", step)  # the static cycle from a fresh state
          compiled = step.lower(holder.params, holder.state, batches).compile()
          args_, calls = (batches,), 1
        temps[label] = compiled.memory_analysis().temp_size_in_bytes

        def run_once(holder=holder, compiled=compiled, args_=args_, calls=calls):
          for _ in range(calls):
            holder.params, holder.state = compiled(holder.params, holder.state, *args_)[
              :2
            ]
          timing.block(holder.params)

        units = calls if path == "per-call" else 2
        candidates.append(timing.Candidate(label, run_once, units=units))
    timings = timing.interleaved(candidates, rounds=args.rounds)
  print(f"Update per batch at {total / 1e6:g}M params (rev {args.rev} vs now):\n")
  print(
    "| candidate | ms per batch | ratio to adamw (same path) | temporaries (params copies) |"
  )
  print("|---|---|---|---|")
  pb = 4 * total
  for name, tm in timings.items():
    base = timings["adamw, " + name.rsplit(", ", 1)[1]].median
    print(
      f"| {name} | {tm.median * 1e3:.3g} ({100 * tm.spread():.0f}%) | "
      f"{tm.median / base:.2f}x | {temps[name] / pb:.2f} |"
    )


if __name__ == "__main__":
  main()
