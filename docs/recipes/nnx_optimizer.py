"""`flax.nnx.Optimizer` with PROFIT, and its diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_profit

model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
rng = np.random.default_rng(0)
batches = [
  {"x": rng.normal(size=(4, 3)).astype("f4"), "y": rng.normal(size=(4, 2)).astype("f4")}
  for _ in range(8)
]
pretrained = jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(model, nnx.Param)))

# The recipe: `optimizer.update(model, grads)` passes the current params to
# PROFIT's update; `profit_diagnostics` reads the optimizer's wrapped state.
optimizer = nnx.Optimizer(
  model, optax_profit.profit(optax.adam(1e-2), ref=1e-3), wrt=nnx.Param
)


@nnx.jit
def train_step(model, optimizer, batch):
  def loss_fn(model):
    pred = jnp.tanh(model(batch["x"]))
    return 0.5 * jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


for batch in batches:
  loss = train_step(model, optimizer, batch)

diagnostics = optax_profit.profit_diagnostics(optimizer.opt_state)
print(f"loss {float(loss):.4f}", diagnostics)
