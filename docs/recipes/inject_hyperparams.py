"""`optax.inject_hyperparams`: change learning rates between steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_profit


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
  for _ in range(8)
]
pretrained = jax.tree.map(jnp.copy, params)


def train(tx, params, change):
  """Runs `tx` over `batches`; `change(i, opt_state)` may edit the state."""
  opt_state = tx.init(params)
  update = jax.jit(tx.update)
  for i, batch in enumerate(batches):
    opt_state = change(i, opt_state)
    grads = jax.grad(loss_fn)(params, batch)
    updates, opt_state = update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  return params, opt_state


# 1. The main optimizer's learning rate as state: halve it from the third
#    cycle on (calls 4.. with n_ref=1), e.g. when a validation loss plateaus.
main = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
tx = optax_profit.profit(main, ref=1e-3, n_ref=1)
halve = lambda i, s: optax.tree.set(s, learning_rate=jnp.asarray(5e-3)) if i == 4 else s
params_1, state_1 = train(tx, params, halve)

# 2. PROFIT's own `ref` as state. Keep `n_ref` static: a traced n_ref (or a
#    traced negative ref) cannot be checked and silently changes the cycle.
tx = optax.inject_hyperparams(optax_profit.profit, static_args=("n_ref",))(
  main=optax.adam(1e-2), ref=1e-3, n_ref=1
)


def ref_to_zero(i, opt_state):
  if i == 4:  # from the third cycle on, reference steps of length 0
    opt_state.hyperparams["ref"] = jnp.asarray(0.0)
  return opt_state


params_2, state_2 = train(tx, params, ref_to_zero)
print(float(optax.tree.get(state_1, "learning_rate")), state_2.hyperparams["ref"])
