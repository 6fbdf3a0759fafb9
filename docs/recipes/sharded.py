"""Sharded training: PROFIT's state sharded like the params on a device mesh.

Run on a CPU with 8 simulated devices:
``XLA_FLAGS=--xla_force_host_platform_device_count=8 python docs/recipes/sharded.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import optax_profit


def loss_fn(params, batch):
  pred = jnp.tanh(batch["x"] @ params["W"] + params["b"])
  return 0.5 * jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))


rng = np.random.default_rng(0)
params = {
  "W": jnp.asarray(0.5 * rng.normal(size=(8, 4)), jnp.float32),
  "b": jnp.zeros((4,), jnp.float32),
}
cycles = [  # each cycle: n_ref + 1 = 2 batches of 16 examples, stacked
    {"x": rng.normal(size=(2, 16, 8)).astype("f4"),
     "y": rng.normal(size=(2, 16, 4)).astype("f4")}
    for _ in range(3)
]  # fmt: skip
pretrained = jax.tree.map(np.asarray, params)

# A 4 x 2 mesh: batches split over "data", W over both axes (FSDP + tensor
# parallelism), b over "model".
mesh = jax.make_mesh((4, 2), ("data", "model"))
replicated = NamedSharding(mesh, P())
param_sh = {
  "W": NamedSharding(mesh, P("data", "model")),
  "b": NamedSharding(mesh, P("model")),
}

# The recipe: PROFIT's per-param state (delta, AdamW's mu and nu) gets the
# params' shardings, the scalars a replicated one; jit the step with them.
params = jax.device_put(params, param_sh)
tx = optax_profit.profit(optax.adamw(1e-2), ref=1e-3)
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
  in_shardings=(param_sh, state_sh, NamedSharding(mesh, P(None, "data"))),
  out_shardings=(param_sh, state_sh, replicated),
  donate_argnums=(0, 1),
)
for batches in cycles:
  params, opt_state, metrics = train_step(params, opt_state, batches)

print(opt_state.delta["W"].sharding, metrics["loss"])
