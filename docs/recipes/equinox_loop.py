"""Equinox: `optim.update(grads, opt_state, model)` and `make_train_step`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_profit

rng = np.random.default_rng(0)
batches = [
  {"x": rng.normal(size=(4, 3)).astype("f4"), "y": rng.normal(size=(4, 2)).astype("f4")}
  for _ in range(8)
]
# A model with non-array leaves (the activations); its weights are float32.
model = eqx.nn.MLP(3, 2, 8, 1, activation=jnp.tanh, key=jax.random.key(0))
pretrained = jax.tree.map(jnp.copy, eqx.filter(model, eqx.is_array))


def loss(model, batch):
  pred = jax.vmap(model)(batch["x"])
  return 0.5 * jnp.mean(jnp.sum((pred - batch["y"]) ** 2, axis=-1))


# 1. Equinox's own loop. The gradient of `filter_value_and_grad` is None on
#    the non-array leaves; those get no update (as with optax.adamw). Init the
#    optimizer on the arrays; `update` takes the filtered model or the whole
#    one. Evaluate `eval_params(model, opt_state)`, a model (theta_ref inside
#    a cycle).
optim = optax_profit.profit(optax.adamw(1e-2), ref=1e-3, n_ref=1)
opt_state = optim.init(eqx.filter(model, eqx.is_array))


@eqx.filter_jit
def make_step(model, opt_state, batch):
  value, grads = eqx.filter_value_and_grad(loss)(model, batch)
  updates, opt_state = optim.update(grads, opt_state, model)
  return eqx.apply_updates(model, updates), opt_state, value


loop_model = model
for batch in batches[:-1]:  # 7 batches: the last call is a reference step
  loop_model, opt_state, _ = make_step(loop_model, opt_state, batch)
eval_model = optax_profit.eval_params(loop_model, opt_state)
eval_loss = loss(eval_model, batches[-1])

# 2. make_train_step: partition the model into arrays and the rest, combine
#    them in the loss. `eqx.partition` shares the model's buffers: the step
#    donates the params, which would delete the model's own arrays. Copy them
#    first (or pass donate=False).
params, static = eqx.partition(model, eqx.is_array)
params = jax.tree.map(jnp.copy, params)
step = optax_profit.make_train_step(
  lambda params, batch: loss(eqx.combine(params, static), batch), optim
)
opt_state = optim.init(params)
stack = lambda bs: jax.tree.map(lambda *xs: jnp.stack(xs), *bs)
for i in range(0, len(batches), 2):  # one cycle (n_ref + 1 batches) per call
  params, opt_state, metrics = step(params, opt_state, stack(batches[i : i + 2]))
step_model = eqx.combine(params, static)
print(f"eval loss {float(eval_loss):.4f}, last losses {metrics['loss']}")
