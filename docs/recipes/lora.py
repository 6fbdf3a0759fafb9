"""PROFIT on adapter parameters only: flax.nnx.LoRA with multi_transform.

The paper's Table 7 applies PROFIT to the adapter (LoRA) weights of a frozen
model. Here an `nnx.LoRA` layer wraps a pre-trained `nnx.Linear`; PROFIT
trains `lora_a` and `lora_b`, and `set_to_zero` keeps the base weights fixed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optax_profit

rngs = nnx.Rngs(0)
model = nnx.LoRA(
    in_features=3, lora_rank=2, out_features=2,
    base_module=nnx.Linear(3, 2, rngs=rngs), rngs=rngs,
)  # fmt: skip
rng = np.random.default_rng(0)
batches = [
  {"x": rng.normal(size=(4, 3)).astype("f4"), "y": rng.normal(size=(4, 2)).astype("f4")}
  for _ in range(8)
]
base_kernel = np.asarray(model.base_module.kernel[...])  # the pre-trained weights


# The recipe: label every parameter by its path, "profit" for the adapter's.
def label(path, _):
  return "profit" if "lora" in jax.tree_util.keystr(path) else "frozen"


tx = optax.multi_transform(
  {
    "profit": optax_profit.profit(optax.adam(1e-2), ref=1e-3),
    "frozen": optax.set_to_zero(),
  },
  lambda params: jax.tree_util.tree_map_with_path(label, params),
)
optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, batch):
  def loss_fn(model):
    return jnp.mean((model(batch["x"]) - batch["y"]) ** 2)

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


for batch in batches:
  loss = train_step(model, optimizer, batch)

print(f"loss {float(loss):.4f}", optax_profit.profit_diagnostics(optimizer.opt_state))
