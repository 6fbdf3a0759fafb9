"""Flax `TrainState`: PROFIT as the `tx` of `train_state.TrainState`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state

import optax_profit


class Model(nn.Module):
  """A one-layer tanh regression."""

  @nn.compact
  def __call__(self, x):
    return jnp.tanh(nn.Dense(2)(x))


rng = np.random.default_rng(0)
batches = [
  {"x": rng.normal(size=(4, 3)).astype("f4"), "y": rng.normal(size=(4, 2)).astype("f4")}
  for _ in range(8)
]
model = Model()
variables = model.init(jax.random.key(0), batches[0]["x"])

# The recipe: `apply_gradients` calls `tx.update(grads, opt_state, params)`,
# which is all PROFIT needs; one call per batch, as usual.
state = train_state.TrainState.create(
  apply_fn=model.apply,
  params=variables["params"],
  tx=optax_profit.profit(optax.adam(1e-2), ref=1e-3, n_ref=1),
)
pretrained = jax.tree.map(jnp.copy, state.params)


@jax.jit
def train_step(state, batch):
  def loss_fn(params):
    pred = state.apply_fn({"params": params}, batch["x"])
    return 0.5 * jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))

  return state.apply_gradients(grads=jax.grad(loss_fn)(state.params))


for batch in batches[:-1]:  # 7 batches: the last call is a reference step
  state = train_step(state, batch)

# Evaluate (or export) the weights PROFIT stands behind: theta_ref inside a
# cycle (as here), the params at a cycle boundary. Flax's MNIST example
# evaluates at epoch ends, whatever the number of steps per epoch.
eval_weights = optax_profit.eval_params(state.params, state.opt_state)
pred = model.apply({"params": eval_weights}, batches[-1]["x"])
eval_loss = 0.5 * jnp.mean(jnp.sum((pred - batches[-1]["y"]) ** 2, axis=-1))
state = train_step(state, batches[-1])  # the main step ends the cycle
assert bool(optax_profit.cycle_ended(state.opt_state))

print(f"step {int(state.step)}", optax_profit.profit_diagnostics(state.opt_state))
