"""Draws one PROFIT cycle in a 2-D weight space (the docs' "How it works" figure).

The points are not drawn by hand: a real ``optax_profit.profit`` runs one cycle
(``n_ref = 2`` reference steps, then the main step) on three batches of a 2-D
least-squares problem, and the figure shows the weights after each ``update``
call, the displacement ``delta``, the main step's gradient ``g`` and its
projection ``g'``. Learning rates are large so that the steps are visible.

Usage: ``python docs/_scripts/cycle_diagram.py OUT.png``.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optax

import optax_profit

# Three batches: each pulls the weights towards its own target.
TARGETS = np.array([[1.6, 0.5], [1.5, 0.7], [1.3, 1.6]], np.float32)
LR = 0.3


def loss(params: dict, target: jax.Array) -> jax.Array:
  """Squared distance of the weights to one batch's target."""
  return 0.5 * jnp.sum((params["w"] - target) ** 2)


def run_cycle() -> dict[str, np.ndarray]:
  """One cycle of ``profit(sgd, ref, n_ref=2)``; returns what the figure draws."""
  tx = optax_profit.profit(optax.sgd(LR), ref=LR, n_ref=2)
  params = {"w": jnp.zeros(2, jnp.float32)}
  state = tx.init(params)
  points = [np.asarray(params["w"])]
  grads = []
  for target in TARGETS:
    g = jax.grad(loss)(params, jnp.asarray(target))
    grads.append(np.asarray(g["w"]))
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    points.append(np.asarray(params["w"]))
  theta_ref, theta = points[0], points[2]
  delta = {"w": jnp.asarray(theta - theta_ref)}
  projected = optax_profit.project_conflicting({"w": jnp.asarray(grads[2])}, delta)
  assert bool(state.diagnostics.projected), (
    "the cycle drawn is meant to show a projection"
  )
  return {
    "points": np.stack(points),
    "g": grads[2],
    "g_proj": np.asarray(projected.updates["w"]),
    "removed_fraction": float(state.diagnostics.removed_fraction),
  }


def draw(out: pathlib.Path) -> None:
  """Writes the figure to ``out``."""
  r = run_cycle()
  pts, g, gp = r["points"], r["g"], r["g_proj"]
  theta_ref, theta = pts[0], pts[2]
  fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=120)
  arrow = dict(arrowstyle="-|>", lw=1.8, shrinkA=0, shrinkB=0)

  ax.scatter(*TARGETS.T, marker="x", color="0.6", zorder=1)
  for i, t in enumerate(TARGETS):
    ax.annotate(
      f"batch {i + 1} target",
      t,
      xytext=(6, -10),
      textcoords="offset points",
      color="0.5",
      fontsize=8,
    )
  for i in range(2):
    ax.annotate("", pts[i + 1], pts[i], arrowprops={**arrow, "color": "tab:blue"})
    mid = (pts[i] + pts[i + 1]) / 2
    ax.annotate(
      f"call {i + 1}: reference step $-\\eta_{{ref}}\\,g_{i + 1}$",
      mid,
      xytext=(4, -16),
      textcoords="offset points",
      color="tab:blue",
      fontsize=9,
    )
  ax.annotate(
    "", theta, theta_ref, arrowprops={**arrow, "color": "tab:orange", "ls": "--"}
  )
  ax.annotate(
    "$\\Delta = \\theta - \\theta_{ref}$",
    (theta + theta_ref) / 2,
    xytext=(-15, 20),
    textcoords="offset points",
    color="tab:orange",
  )
  # The main step's gradient at theta, drawn as the descent direction -g.
  scale = LR
  ax.annotate(
    "",
    theta - scale * g,
    theta,
    arrowprops={**arrow, "color": "tab:red", "alpha": 0.45},
  )
  ax.annotate(
    "$-g_3$ (pushes further along $\\Delta$)",
    theta - scale * g,
    xytext=(4, 4),
    textcoords="offset points",
    color="tab:red",
    alpha=0.7,
    fontsize=9,
  )
  ax.annotate("", theta - scale * gp, theta, arrowprops={**arrow, "color": "tab:red"})
  ax.annotate(
    "$-g'$ (conflict removed)",
    theta - scale * gp,
    xytext=(4, -12),
    textcoords="offset points",
    color="tab:red",
    fontsize=9,
  )
  ax.annotate("", pts[3], theta_ref, arrowprops={**arrow, "color": "tab:green"})
  ax.annotate(
    "call 3: main step from $\\theta_{ref}$,\n$O(g') = -\\eta\\,g'$",
    (theta_ref + pts[3]) / 2,
    xytext=(-150, -14),
    textcoords="offset points",
    color="tab:green",
    fontsize=9,
  )
  labels = {
    0: "$\\theta_{ref}$ (start of the cycle)",
    1: "$\\theta_1$",
    2: "$\\theta$ after the reference steps",
    3: "$\\theta_{ref} + O(g')$",
  }
  for i, p in enumerate(pts):
    ax.plot(*p, "o", color="black", ms=4, zorder=3)
    offset = {0: (-20, -14), 3: (-75, 6)}.get(i, (6, 4))
    ax.annotate(labels[i], p, xytext=offset, textcoords="offset points", fontsize=9)
  ax.set_title(
    "One PROFIT cycle (n_ref = 2): three update calls, three batches\n"
    f"projection removed {r['removed_fraction']:.0%} of the norm of $g_3$",
    fontsize=10,
  )
  ax.set_xlabel("weight 1")
  ax.set_ylabel("weight 2")
  ax.set_aspect("equal")
  ax.margins(0.25)
  fig.tight_layout()
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out)
  plt.close(fig)


if __name__ == "__main__":
  draw(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "cycle.png"))
