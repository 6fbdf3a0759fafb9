"""Peak device memory of one candidate, measured in a fresh process (GPU).

``python -m benchmarks.peak update <total_params> <name>`` or ``python -m
benchmarks.peak train <workload> <name>`` runs the candidate a few times and
prints one JSON line: ``{"peak_bytes": ..., "bytes_in_use": ...}`` from
``jax.devices()[0].memory_stats()`` (absent on CPU: then ``null``). The peak
counter cannot be reset, hence one process per candidate.
"""

import json
import sys

import jax
import jax.numpy as jnp
import optax

import optax_profit
from benchmarks import models, update


def _update_candidate(total: int, name: str):
  params = update.make_params(total)
  t = jnp.float32(1e-3)  # per-call steps make the gradient params * t
  grads = jax.tree.map(lambda p: p * t, params)
  if name in ("sgd", "adamw"):
    tx = optax.sgd(1e-3) if name == "sgd" else optax.adamw(1e-3)
    step = update.per_call_step(tx)
    return step, params, tx.init(jax.tree.map(jnp.copy, params)), (t,)
  n_ref = 3 if "n_ref=3" in name else 1
  dtype = jnp.bfloat16 if "bf16" in name else None
  tx = optax_profit.profit(optax.adamw(1e-3), ref=1e-4, n_ref=n_ref, delta_dtype=dtype)
  state = tx.init(jax.tree.map(jnp.copy, params))
  if "cycle" in name:  # the static cycle of make_train_step, linear loss
    step = optax_profit.make_train_step(update.linear_loss, tx)
    batches = jax.tree.map(lambda g: jnp.stack([g] * (n_ref + 1)), grads)
    return _without_metrics(step), params, state, (batches,)
  return update.per_call_step(tx), params, state, (t,)


def _without_metrics(step):
  def wrapped(params, state, batches):
    params, state, _ = step(params, state, batches)
    return params, state

  return wrapped


def _train_candidate(workload: str, name: str):
  work = {"cnn": models.cnn, "resnet18": models.resnet18}.get(
    workload, models.transformer
  )()
  tx = (
    optax.adamw(1e-4)
    if name.startswith("adamw")
    else optax_profit.profit(optax.adamw(1e-4), ref=1e-6, n_ref=1)
  )
  step = optax_profit.make_train_step(work.loss_fn, tx, cycle_length=2)
  batch = jax.tree.map(
    lambda *xs: jnp.stack(xs), work.make_batch(0), work.make_batch(1)
  )
  params = jax.tree.map(jnp.copy, work.params)
  return _without_metrics(step), params, tx.init(params), (batch,)


def main(argv: list[str]) -> None:
  kind, what, name = argv[1], argv[2], " ".join(argv[3:])
  if kind == "update":
    step, params, state, args = _update_candidate(int(what), name)
  else:
    step, params, state, args = _train_candidate(what, name)
  for _ in range(4):
    params, state = step(params, state, *args)
  jax.block_until_ready((params, state))
  stats = jax.devices()[0].memory_stats() or {}
  print(
    json.dumps(
      {
        "peak_bytes": stats.get("peak_bytes_in_use"),
        "bytes_in_use": stats.get("bytes_in_use"),
      }
    )
  )


if __name__ == "__main__":
  main(sys.argv)
