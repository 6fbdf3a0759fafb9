"""The optimizer update before and after the lean implementation.

``python -m benchmarks.before_after [--rev 821572a] [--size 1e7]`` extracts
``optax_profit/`` at git revision ``rev`` (the core library before the
performance work) into a temporary package ``optax_profit_before`` and times,
interleaved in one process, per batch: ``optax.adamw``; the old and the
current per-call ``update()``; the old ``make_train_step`` path (a scan of
per-call updates) and the current static cycle, both fed the same
precomputed gradients. Prints a Markdown table.
"""

import argparse
import functools
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
      cwd=ROOT, capture_output=True, text=True, check=True,
  ).stdout.split()
  pkg = where / "optax_profit_before"
  pkg.mkdir()
  for path in files:
    if not path.endswith(".py"):
      continue
    text = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True,
        text=True, check=True,
    ).stdout
    text = text.replace("from optax_profit", "from optax_profit_before")
    (pkg / pathlib.Path(path).name).write_text(text)
  sys.path.insert(0, str(where))
  return importlib.import_module("optax_profit_before")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rev", default="821572a")
  parser.add_argument("--size", default="1e7")
  parser.add_argument("--rounds", type=int, default=10)
  args = parser.parse_args()
  total = int(float(args.size))
  with tempfile.TemporaryDirectory() as tmp:
    old = _old_package(args.rev, pathlib.Path(tmp))
    params = update.make_params(total)
    grads = jax.tree.map(lambda p: 1e-3 * p, params)
    main_grads = jax.tree.map(lambda p: 2e-3 * p, params)
    candidates, memory, state_bytes = [], {}, {}
    add = functools.partial(
        update._add, candidates, memory, state_bytes, params  # pylint: disable=protected-access
    )
    adamw = optax.adamw(1e-3)
    add("adamw", update.per_call_step(adamw), adamw, (grads,), 1, 1)
    for n_ref in (1, 3):
      before = old.profit(optax.adamw(1e-3), ref=1e-4, n_ref=n_ref)
      after = optax_profit.profit(optax.adamw(1e-3), ref=1e-4, n_ref=n_ref)
      length = n_ref + 1
      add(f"before: n_ref={n_ref}, update()", update.per_call_step(before),
          before, (grads,), length, length)
      add(f"after: n_ref={n_ref}, update()", update.per_call_step(after),
          after, (grads,), length, length)
      stacked = jax.tree.map(
          lambda g, m, k=n_ref: jnp.stack([g] * k + [m]), grads, main_grads
      )
      scan = _scan_of_updates(before, length)
      add(f"before: n_ref={n_ref}, make_train_step (scan)", scan, before,
          (stacked,), length, 1)
      ref_grads = jax.tree.map(lambda g, k=n_ref: jnp.stack([g] * k), grads)
      add(f"after: n_ref={n_ref}, make_train_step (cycle)",
          update.cycle_step(after, n_ref), after, (ref_grads, main_grads),
          length, 1)
    timings = timing.interleaved(candidates, rounds=args.rounds)
  base = timings["adamw"].median
  print(f"Update per batch at {total / 1e6:g}M params (rev {args.rev} vs now):\n")
  print("| candidate | ms per batch | ratio to adamw | temporaries (params copies) |")
  print("|---|---|---|---|")
  pb = 4 * total
  for name, t in timings.items():
    print(
        f"| {name} | {t.median * 1e3:.3g} ({100 * t.spread():.0f}%) | "
        f"{t.median / base:.2f}x | {memory[name]['temporaries'] / pb:.2f} |"
    )


def _scan_of_updates(tx, length):
  """The old make_train_step's structure: scan of per-call updates."""

  def step(params, state, stacked_grads):
    def body(carry, grads):
      params, state = carry
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, state), _ = jax.lax.scan(body, (params, state), stacked_grads)
    return params, state

  del length
  return jax.jit(step, donate_argnums=(0, 1))


if __name__ == "__main__":
  main()
