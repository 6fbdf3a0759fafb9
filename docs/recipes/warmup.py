"""Warm-up for distant data: plain main steps first, then PROFIT's cycles."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_profit


# A tiny tanh regression and its data, so that this file runs as it is.
def loss_fn(params, batch):
  pred = jnp.tanh(batch["x"] @ params["W"] + params["b"])
  return 0.5 * jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))


rng = np.random.default_rng(0)
params = {
  "W": jnp.asarray(0.5 * rng.normal(size=(3, 2)), jnp.float32),
  "b": jnp.zeros((2,), jnp.float32),
}
batches = [
  {"x": rng.normal(size=(4, 3)).astype("f4"), "y": rng.normal(size=(4, 2)).astype("f4")}
  for _ in range(12)
]
pretrained = jax.tree.map(jnp.copy, params)

# The recipe: the first `warmup_steps` update calls are plain Adam steps (the
# paper warms up before PROFIT when the new data are far from the old, e.g.
# VTAB-1K); the cycles of n_ref + 1 calls start after them.
WARMUP = 4
tx = optax_profit.profit(optax.adam(1e-2), ref=1e-3, n_ref=1, warmup_steps=WARMUP)
opt_state = tx.init(params)
update = jax.jit(tx.update)
for batch in batches:
  grads = jax.grad(loss_fn)(params, batch)
  updates, opt_state = update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)

main_steps = int(opt_state.main_state[0].count)  # 4 warm-up + 4 cycles
print(f"{int(opt_state.count)} update calls, {main_steps} main-optimizer steps")
