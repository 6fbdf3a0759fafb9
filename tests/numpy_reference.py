"""An independent float64 NumPy implementation of PROFIT (Algorithm 1).

Written from the paper, not from the library: nothing here imports
``optax_profit`` or ``optax``. Params are dicts of NumPy arrays. The model is a
one-layer tanh regression, ``pred = tanh(x @ W + b)``, with an analytic
gradient of ``0.5 * mean_i ||pred_i - y_i||^2``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

Params = dict[str, np.ndarray]


def loss(params: Params, batch: dict[str, np.ndarray]) -> float:
  pred = np.tanh(batch["x"] @ params["W"] + params["b"])
  return 0.5 * np.mean(np.sum((pred - batch["y"]) ** 2, axis=-1))


def grad(params: Params, batch: dict[str, np.ndarray]) -> Params:
  x, y = batch["x"], batch["y"]
  pred = np.tanh(x @ params["W"] + params["b"])
  dpred = (pred - y) / x.shape[0]
  dz = dpred * (1.0 - pred**2)
  return {"W": x.T @ dz, "b": dz.sum(axis=0)}


def make_batches(n: int, seed: int, batch_size: int = 4, noise: float = 1.0):
  """Random regression batches; noisy targets make batch gradients disagree."""
  rng = np.random.default_rng(seed)
  true_w = rng.normal(size=(3, 2))
  out = []
  for _ in range(n):
    x = rng.normal(size=(batch_size, 3))
    y = np.tanh(x @ true_w) + noise * rng.normal(size=(batch_size, 2))
    out.append({"x": x, "y": y})
  return out


def init_params(seed: int = 0) -> Params:
  rng = np.random.default_rng(1000 + seed)
  return {"W": 0.5 * rng.normal(size=(3, 2)), "b": 0.1 * rng.normal(size=(2,))}


# ---------------------------------------------------------------- optimizers
class SGD:
  """``theta <- theta - lr(k) * v``, ``v = g + momentum * v`` (PyTorch/optax)."""

  def __init__(self, lr: float | Callable[[int], float], momentum: float = 0.0):
    self.lr = lr if callable(lr) else (lambda k, lr=lr: lr)
    self.momentum = momentum
    self.k = 0
    self.v = None

  def step(self, g: Params, theta: Params) -> Params:
    del theta
    if self.momentum:
      if self.v is None:
        self.v = {k: np.zeros_like(x) for k, x in g.items()}
      self.v = {k: g[k] + self.momentum * self.v[k] for k in g}
      direction = self.v
    else:
      direction = g
    lr = self.lr(self.k)
    self.k += 1
    return {k: -lr * direction[k] for k in g}


class Adam:
  """Adam (eps outside the sqrt); decoupled weight decay when ``wd > 0``."""

  def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    self.lr, self.b1, self.b2, self.eps, self.wd = lr, b1, b2, eps, wd
    self.t = 0
    self.m = self.v = None

  def step(self, g: Params, theta: Params) -> Params:
    if self.m is None:
      self.m = {k: np.zeros_like(x) for k, x in g.items()}
      self.v = {k: np.zeros_like(x) for k, x in g.items()}
    self.t += 1
    out = {}
    for k in g:
      self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g[k]
      self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g[k] ** 2
      m_hat = self.m[k] / (1 - self.b1**self.t)
      v_hat = self.v[k] / (1 - self.b2**self.t)
      direction = m_hat / (np.sqrt(v_hat) + self.eps) + self.wd * theta[k]
      out[k] = -self.lr * direction
    return out


# ------------------------------------------------------------------- PROFIT
@dataclasses.dataclass
class Record:
  """Params after every update call, and the main steps' diagnostics."""

  params: list[Params] = dataclasses.field(default_factory=list)
  omegas: list[float] = dataclasses.field(default_factory=list)
  projected: list[bool] = dataclasses.field(default_factory=list)
  delta_norms: list[float] = dataclasses.field(default_factory=list)


def run_profit(
  theta: Params,
  grad_at: Callable[[Params, int], Params],
  num_calls: int,
  main,
  ref,
  n_ref: int,
  warmup_steps: int = 0,
  trainable: tuple[str, ...] | None = None,
  mutant: str | None = None,
) -> Record:
  """Runs Algorithm 1 for ``num_calls`` gradient evaluations.

  Args:
    theta: initial params.
    grad_at: ``grad_at(theta, i)``, the gradient for the i-th call.
    num_calls: number of gradient evaluations (update calls).
    main: the main optimizer (``.step(g, theta) -> update``).
    ref: the reference optimizer.
    n_ref: reference steps per cycle.
    warmup_steps: leading plain main-optimizer steps.
    trainable: leaves PROFIT acts on (others stay fixed); all by default.
    mutant: inject a known implementation mistake, to show that a test
      comparing against this reference would catch it: ``"parallel"`` returns
      the parallel component ``(omega/|delta|^2) delta`` instead of
      ``g - (omega/|delta|^2) delta``; ``"displaced"`` runs the main optimizer
      at the displaced weights instead of theta_ref.

  Returns:
    A :class:`Record`.
  """
  keys = tuple(theta) if trainable is None else trainable
  theta = {k: np.array(v, dtype=np.float64) for k, v in theta.items()}
  rec = Record()
  theta_ref = None
  for i in range(num_calls):
    g_full = grad_at(theta, i)
    g = {k: g_full[k] for k in keys}
    if i < warmup_steps:
      u = main.step(g, {k: theta[k] for k in keys})
      theta = {**theta, **{k: theta[k] + u[k] for k in keys}}
      rec.params.append(theta)
      continue
    phase = (i - warmup_steps) % (n_ref + 1)
    if phase == 0:
      theta_ref = {k: theta[k].copy() for k in keys}
    if phase < n_ref:
      u = ref.step(g, {k: theta[k] for k in keys})
      theta = {**theta, **{k: theta[k] + u[k] for k in keys}}
    else:
      delta = {k: theta[k] - theta_ref[k] for k in keys}
      omega = sum(float(np.sum(delta[k] * g[k])) for k in keys)
      dn2 = sum(float(np.sum(delta[k] ** 2)) for k in keys)
      fired = omega < 0 and dn2 > 0
      if fired:
        if mutant == "parallel":
          g = {k: (omega / dn2) * delta[k] for k in keys}
        else:
          g = {k: g[k] - (omega / dn2) * delta[k] for k in keys}
      at = {k: theta[k] for k in keys} if mutant == "displaced" else theta_ref
      u = main.step(g, at)
      theta = {**theta, **{k: theta_ref[k] + u[k] for k in keys}}
      rec.omegas.append(omega)
      rec.projected.append(fired)
      rec.delta_norms.append(np.sqrt(dn2))
    rec.params.append(theta)
  return rec


def run_on_batches(
  batches, n_ref: int, wd: float = 0.0, run=run_profit, per_call: int = 1, **kwargs
):
  """``run`` in the tests' common scenario: from :func:`init_params`, call
  ``i`` on the mean gradient of batches ``per_call * i`` to ``per_call * (i +
  1) - 1`` (gradient accumulation), ``Adam(0.05, wd)`` as the main optimizer
  and ``SGD(0.05)`` as the reference one; ``kwargs`` go to ``run``."""

  def grad_at(theta, i):
    gs = [grad(theta, batches[per_call * i + j]) for j in range(per_call)]
    return {key: sum(g[key] for g in gs) / per_call for key in gs[0]}

  return run(
    init_params(),
    grad_at,
    len(batches) // per_call,
    main=Adam(0.05, wd=wd),
    ref=SGD(0.05),
    n_ref=n_ref,
    **kwargs,
  )
