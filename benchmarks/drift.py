"""Distance of each storage to the float64 algorithm, on the toy model.

The toy problem of the paper (Sec. 4.1, Appendix C.1): f(x) = sin(10 |x|) on
the plane, an MLP [2, 500] -> [500, 500] -> [500, 1] with LayerNorm, RMSProp
(PyTorch defaults). A base model is trained on the original domain
(RMSProp 1e-2, x0.9 every 500 steps), then fine-tuned on the new domain with
``profit(rmsprop(5e-4, x0.95 every 100 main steps), ref=main / 100,
n_ref=1)`` for ``cycles`` cycles, from the same base and the same batches, with
each storage:

* ``float64 params (reference)``: ``storage="copy"``, params and arithmetic
  in float64 (``jax.enable_x64``): the algorithm with negligible rounding,
  the reference of the comparisons;
* ``default``: the library's default storage (the displacement, float32),
  float32 params, through ``make_train_step`` (the static cycle);
* ``default, update()``: the same through per-call ``update``;
* ``copy`` and ``copy, update()``: ``storage="copy"`` (theta_ref kept);
* ``delta bfloat16``: ``delta_dtype=jnp.bfloat16``.

Model and data come from ``examples.toy_regression`` when it imports (same
definitions as the example), else from the equivalent code below.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_profit

REFERENCE = "float64 params (reference)"
HIDDEN = 500
BATCH = 256
N_TRAIN = 50_000
N_TEST = 5_000


class _MLP(nn.Module):
  """Fallback of ``examples.toy_regression.train.MLP`` (Dense-LN-ReLU x2)."""

  hidden: int = HIDDEN

  @nn.compact
  def __call__(self, x):
    for name in ("1", "2"):
      x = nn.relu(
        nn.LayerNorm(name=f"norm_{name}")(
          nn.Dense(self.hidden, name=f"dense_{name}")(x)
        )
      )
    return jnp.squeeze(nn.Dense(1, name="head")(x), -1)


def _data(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Old/new train (noisy) and test (noise-free) splits."""
  try:
    from examples.toy_regression import input_pipeline  # pylint: disable=import-outside-toplevel

    d = input_pipeline.make_datasets(
      seed,
      n_train=N_TRAIN,
      n_test=N_TEST,
      old_domain=(-1.0, 1.0),
      new_domain=(0.8, 1.5),
      noise_std=1.0,
    )
    return {
      "old_train": (d.old_train.x, d.old_train.y),
      "new_train": (d.new_train.x, d.new_train.y),
      "old_test": (d.old_test.x, d.old_test.y),
      "new_test": (d.new_test.x, d.new_test.y),
    }
  except (ImportError, AttributeError, TypeError):
    rng = np.random.default_rng(seed)
    out = {}
    for name, (lo, hi), n, noise in (
      ("old_train", (-1.0, 1.0), N_TRAIN, 1.0),
      ("new_train", (0.8, 1.5), N_TRAIN, 1.0),
      ("old_test", (-1.0, 1.0), N_TEST, 0.0),
      ("new_test", (0.8, 1.5), N_TEST, 0.0),
    ):
      x = rng.uniform(lo, hi, (n, 2))
      y = np.sin(10 * np.linalg.norm(x, axis=-1)) + noise * rng.standard_normal(n)
      out[name] = (x.astype(np.float32), y.astype(np.float32))
    return out


def _model() -> tuple[nn.Module, str]:
  try:
    from examples.toy_regression import train  # pylint: disable=import-outside-toplevel

    return train.MLP(hidden=HIDDEN), "examples.toy_regression"
  except (ImportError, AttributeError, TypeError):
    return _MLP(), "benchmarks.drift (local copy)"


def _rmsprop(lr: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  # PyTorch's RMSProp: alpha 0.99, eps 1e-8 outside the square root.
  return optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False)


def _staircase(init: float, every: int, rate: float) -> optax.Schedule:
  return optax.exponential_decay(init, every, rate, staircase=True)


def run(*, base_steps: int, cycles: int, seed: int = 0) -> dict[str, Any]:
  """Trains the base model, then fine-tunes it with each storage.

  Args:
    base_steps: base-training batches on the original domain.
    cycles: PROFIT cycles of fine-tuning (two batches each).
    seed: data, init and batch-order seed.

  Returns:
    A dict with ``source`` (where the model came from), ``errors`` (MSE on
    the old and new test sets per variant, and for the base model),
    ``max_abs_diff`` and ``rel_l2_diff`` (max |params - reference| and
    ||params - reference|| / ||reference - base|| per variant, the reference
    being the copy storage in float64), ``bf16_vs_f32_delta``,
    ``max_abs_update`` (max |reference - base|) and ``max_abs_param``.
  """
  model, source = _model()
  data = _data(seed)
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 2)))["params"]

  def loss_fn(params, batch):
    pred = model.apply({"params": params}, batch["x"])
    return jnp.mean((pred - batch["y"]) ** 2)

  @jax.jit
  def mse(params, x, y):
    return jnp.mean((model.apply({"params": params}, x) - y) ** 2)

  rng = np.random.default_rng(seed + 1)

  def batches(split: str, num: int) -> dict[str, np.ndarray]:
    x, y = data[split]
    idx = rng.integers(0, len(x), (num, BATCH))
    return {"x": x[idx], "y": y[idx]}

  # Base training, 100 batches per compiled call.
  base_tx = _rmsprop(_staircase(1e-2, 500, 0.9))
  chunk = 100
  step = optax_profit.make_train_step(loss_fn, base_tx, cycle_length=chunk)
  state = base_tx.init(params)
  for _ in range(max(1, base_steps // chunk)):
    params, state, _ = step(params, state, batches("old_train", chunk))
  base = jax.tree.map(np.asarray, params)

  ft_batches = batches("new_train", 2 * cycles)

  def profit_tx(storage):
    main = _rmsprop(_staircase(5e-4, 100, 0.95))
    return optax_profit.profit(
      main, ref=_staircase(5e-6, 100, 0.95), n_ref=1, **storage
    )

  finals = {}
  copy, bf16 = {"storage": "copy"}, {"delta_dtype": jnp.bfloat16}
  for name, storage, per_call, wide in (
    (REFERENCE, copy, False, True),
    ("default", {}, False, False),
    ("default, update()", {}, True, False),
    ("copy", copy, False, False),
    ("copy, update()", copy, True, False),
    ("delta bfloat16", bf16, False, False),
  ):
    with jax.enable_x64(wide):
      pdtype = jnp.float64 if wide else jnp.float32
      tx = profit_tx(storage)
      params = jax.tree.map(lambda x, d=pdtype: jnp.array(x, d), base)
      state = tx.init(params)
      if per_call:

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def one(params, state, batch, tx=tx):
          grads = jax.grad(loss_fn)(params, batch)
          updates, state = tx.update(grads, state, params)
          return optax.apply_updates(params, updates), state

        for i in range(2 * cycles):
          params, state = one(
            params, state, jax.tree.map(lambda b, i=i: b[i], ft_batches)
          )
      else:
        step = optax_profit.make_train_step(loss_fn, tx)
        for c in range(cycles):
          chunk = jax.tree.map(
            lambda b, c=c, d=pdtype: jnp.asarray(b[2 * c : 2 * c + 2], d),
            ft_batches,
          )
          params, state, _ = step(params, state, chunk)
      finals[name] = jax.tree.map(lambda x: np.asarray(x, np.float64), params)

  def flat(p):
    return np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree.leaves(p)])

  base_flat = flat(base)
  ref = flat(finals[REFERENCE])
  moved = np.linalg.norm(ref - base_flat)

  def errors(p):
    return {split: float(mse(p, *data[split])) for split in ("old_test", "new_test")}

  return {
    "source": source,
    "base_steps": base_steps,
    "cycles": cycles,
    "errors": {"base": errors(base), **{k: errors(v) for k, v in finals.items()}},
    "max_abs_diff": {
      k: float(np.max(np.abs(flat(v) - ref))) for k, v in finals.items()
    },
    "rel_l2_diff": {
      k: float(np.linalg.norm(flat(v) - ref) / moved) for k, v in finals.items()
    },
    "bf16_vs_f32_delta": float(
      np.max(np.abs(flat(finals["delta bfloat16"]) - flat(finals["default"])))
    ),
    "max_abs_update": float(np.max(np.abs(ref - base_flat))),
    "max_abs_param": float(np.max(np.abs(base_flat))),
  }
