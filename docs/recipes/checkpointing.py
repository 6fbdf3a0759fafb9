"""Orbax checkpointing: save mid-cycle, restore in a fresh process, resume."""

import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

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
tx = optax_profit.profit(optax.adamw(1e-2), ref=1e-3, n_ref=1)
update = jax.jit(tx.update)


def train(params, opt_state, batches):
  for batch in batches:
    grads = jax.grad(loss_fn)(params, batch)
    updates, opt_state = update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  return params, opt_state


# The recipe: save params, the whole optimizer state (its `count` fixes the
# position in the cycle) and the step. Any update call is a valid point, even
# between a reference step and its main step (here: after 3 calls).
step = 3
params, opt_state = train(params, tx.init(params), batches[:step])
mngr = ocp.CheckpointManager(pathlib.Path(tempfile.mkdtemp()) / "ckpt")
mngr.save(
  step,
  args=ocp.args.StandardSave(
    {"params": params, "opt_state": opt_state, "step": jnp.int32(step)}
  ),
)
mngr.wait_until_finished()

# In a fresh process: restore onto abstract targets (add `sharding=` to each
# ShapeDtypeStruct for sharded params), then go on from the saved step.
abstract_params = jax.eval_shape(lambda: pretrained)
target = jax.eval_shape(
  lambda p: {"params": p, "opt_state": tx.init(p), "step": jnp.int32(0)},
  abstract_params,
)
restored = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(target))
resumed_params, resumed_state = train(
  restored["params"], restored["opt_state"], batches[int(restored["step"]) :]
)
print(f"resumed at call {int(restored['step'])}, now {int(resumed_state.count)}")
