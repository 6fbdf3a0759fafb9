"""Multi-host: one JAX process per host, PROFIT sharded over all their devices.

Start it once per process (on a cluster: once per host). On one CPU machine,
2 processes x 2 simulated devices:

  for i in 0 1; do
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python \\
      docs/recipes/multi_host.py --process-id $i --num-processes 2 \\
      --coordinator 127.0.0.1:12345 --ckpt /tmp/multi_host_ckpt &
  done; wait
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import optax_profit

parser = argparse.ArgumentParser()
parser.add_argument("--process-id", type=int, default=0)
parser.add_argument("--num-processes", type=int, default=1)
parser.add_argument("--coordinator", default="127.0.0.1:12345")
parser.add_argument("--ckpt", required=True, help="a folder every process sees")
parser.add_argument("--out", default=None, help="process 0 saves the params here")
args = parser.parse_args()

# 1. Join the job before anything else touches JAX. CPU devices talk across
#    processes over gloo (GPUs use NCCL, TPUs their own network: the setting
#    does not matter there). On SLURM / Cloud TPU, initialize() alone works.
if args.num_processes > 1:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    args.coordinator,
    num_processes=args.num_processes,
    process_id=args.process_id,
    initialization_timeout=60,  # a missing process: an error, not a hang
  )

# 2. One mesh over every process's devices; the same code on every process.
mesh = jax.make_mesh((jax.device_count(), 1), ("data", "model"))
replicated = NamedSharding(mesh, P())
param_sh = {"W": NamedSharding(mesh, P("data")), "b": replicated}
batch_sh = NamedSharding(mesh, P(None, "data"))  # [cycle, batch, ...]


def loss_fn(params, batch):
  pred = jnp.tanh(batch["x"] @ params["W"] + params["b"])
  return 0.5 * jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))


def local_rows(cycle):
  """This process's rows of the cycle's global batches (16 rows each)."""
  rng = np.random.default_rng(cycle)  # the same global batch everywhere
  batch = {"x": rng.normal(size=(2, 16, 8)), "y": rng.normal(size=(2, 16, 4))}
  rows = 16 // jax.process_count()
  mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
  return {k: v[:, mine].astype("f4") for k, v in batch.items()}


# 3. Params and PROFIT's state on the mesh, built by jit on every process.
init = {
  "W": 0.5 * np.random.default_rng(0).normal(size=(8, 4)).astype("f4"),
  "b": np.zeros(4, "f4"),
}
params = jax.jit(lambda: init, out_shardings=param_sh)()
tx = optax_profit.profit(optax.sgd(0.5, momentum=0.9), ref=5e-3)
state_sh = optax.tree_map_params(
  tx,
  lambda _, s: s,
  jax.eval_shape(tx.init, params),
  param_sh,
  transform_non_params=lambda _: replicated,
)
opt_state = jax.jit(tx.init, out_shardings=state_sh)(params)
train_step = jax.jit(
  optax_profit.make_train_step(loss_fn, tx, donate=False),
  in_shardings=(param_sh, state_sh, batch_sh),
  out_shardings=(param_sh, state_sh, replicated),
  donate_argnums=(0, 1),
)


def run(params, opt_state, cycles):
  for cycle in cycles:
    # 4. Each process passes its rows; JAX assembles the global batch.
    batches = jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(batch_sh, x),
      local_rows(cycle),
    )
    params, opt_state, metrics = train_step(params, opt_state, batches)
  return params, opt_state, metrics


params, opt_state, _ = run(params, opt_state, range(2))

# 5. Checkpoint: every process calls save and writes its own shards.
state = {"params": params, "opt_state": opt_state}
with ocp.CheckpointManager(os.path.abspath(args.ckpt)) as mngr:
  mngr.save(2, args=ocp.args.StandardSave(state))
  mngr.wait_until_finished()
  # Restore onto the target shardings (any mesh, any process count):
  target = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
  )
  restored = mngr.restore(2, args=ocp.args.StandardRestore(target))
params, opt_state, metrics = run(restored["params"], restored["opt_state"], [2])

# 6. Gather on every process (a collective), then only process 0 reports.
params = multihost_utils.process_allgather(params, tiled=True)
if jax.process_index() == 0:
  print("omega", float(metrics["omega"]), "projected", bool(metrics["projected"]))
  if args.out:
    np.savez(args.out, **params)
