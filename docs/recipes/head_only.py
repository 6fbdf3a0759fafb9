"""Head-only PROFIT: PROFIT on the head, the body frozen, with multi_transform."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_profit


# A tiny two-part model: a frozen "body" and a trained "head".
def loss_fn(params, batch):
  pred = jnp.tanh(batch["x"] @ params["body"]["W"] + params["head"]["b"])
  return 0.5 * jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))


rng = np.random.default_rng(0)
params = {
  "body": {"W": jnp.asarray(0.5 * rng.normal(size=(3, 2)), jnp.float32)},
  "head": {"b": jnp.zeros((2,), jnp.float32)},
}
batches = [
  {"x": rng.normal(size=(4, 3)).astype("f4"), "y": rng.normal(size=(4, 2)).astype("f4")}
  for _ in range(8)
]
pretrained = jax.tree.map(jnp.copy, params)

# The recipe: one label per subtree. `optax.masked(profit(...), mask)` alone
# would pass the body's raw gradients through as its updates (a step of
# gradient ascent): freeze it explicitly with `set_to_zero`.
labels = {"body": "frozen", "head": "profit"}
tx = optax.multi_transform(
  {
    "profit": optax_profit.profit(optax.adam(1e-2), ref=1e-3),
    "frozen": optax.set_to_zero(),
  },
  labels,
)
# Equivalent: optax.chain(
#     optax.masked(optax_profit.profit(...), {"body": False, "head": True}),
#     optax.masked(optax.set_to_zero(), {"body": True, "head": False}))
opt_state = tx.init(params)
for batch in batches:
  grads = jax.grad(loss_fn)(params, batch)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)

print(optax_profit.profit_diagnostics(opt_state))
