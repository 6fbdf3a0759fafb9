"""Schedules: `main`'s count main steps; a schedule measured in batches."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_profit

n_ref, warmup_steps, num_batches = 1, 2, 48
# The schedule you think of, in batches (update calls): 0.01 down to 0.
in_batches = optax.linear_schedule(1e-2, 0.0, num_batches)


# `main`'s state advances once per warm-up step and once per cycle, so a
# schedule inside `main` is evaluated at the number of main steps taken: the
# plain `optax.adam(in_batches)` would be at half its course after 48 batches.
# The recipe: map main step m to the batch it runs on (the warm-up steps are
# batches 0..W-1, then the main step of cycle c is batch W + c*(n_ref+1) + n_ref).
def main_steps_to_batches(schedule, n_ref, warmup_steps):
  def at_main_step(m):
    batch = jnp.where(
      m < warmup_steps, m, warmup_steps + (m - warmup_steps) * (n_ref + 1) + n_ref
    )
    return schedule(batch)

  return at_main_step


def loss_fn(params, batch):
  return 0.5 * jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)


rng = np.random.default_rng(0)
batches = [
  {"x": rng.normal(size=(8, 3)).astype("f4"), "y": rng.normal(size=(8,)).astype("f4")}
  for _ in range(num_batches)
]


def train(learning_rate):
  # inject_hyperparams only to read the rate back from the state.
  main = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
  tx = optax_profit.profit(main, ref=1e-3, n_ref=n_ref, warmup_steps=warmup_steps)
  params = {"w": jnp.zeros((3,))}
  opt_state = tx.init(params)
  update = jax.jit(tx.update)
  for batch in batches:
    updates, opt_state = update(jax.grad(loss_fn)(params, batch), opt_state, params)
    params = optax.apply_updates(params, updates)
  return params, opt_state


_, naive_state = train(in_batches)
_, state = train(main_steps_to_batches(in_batches, n_ref, warmup_steps))
naive_lr = float(naive_state.main_state.hyperparams["learning_rate"])
last_lr = float(state.main_state.hyperparams["learning_rate"])
print(f"last main step's rate: {last_lr:.2e} (naive: {naive_lr:.2e})")
