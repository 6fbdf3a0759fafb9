"""The PROFIT projection: remove from a gradient its conflict with a displacement.

Algorithm 1, lines 14-17 of the paper: with ``delta = theta - theta_ref`` and
``omega = <delta, g>`` (one scalar over the whole pytree), a negative ``omega``
means that ``g`` would push the weights further along ``delta``, away from the
reference. Then ``g`` is replaced by its component orthogonal to ``delta``:
``g - (omega / ||delta||^2) * delta``. Otherwise ``g`` is left as it is.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class Projection(NamedTuple):
  """Result of :func:`project_conflicting`.

  Attributes:
    updates: the gradient after projection, ``g'`` (same structure and dtypes
      as the input gradient).
    omega: ``<delta, g>`` before projection, summed over all leaves.
    delta_norm: ``||delta||``.
    cosine: the cosine between ``g`` and ``delta`` (0 if either is zero).
    removed_fraction: ``||g - g'|| / ||g||``, the fraction of the gradient's
      norm that the projection removed (``-cosine`` when it fired, else 0).
    projected: whether the projection fired (``omega < 0`` and
      ``delta != 0``).
  """

  updates: optax.Updates
  omega: jax.Array
  delta_norm: jax.Array
  cosine: jax.Array
  removed_fraction: jax.Array
  projected: jax.Array


def accumulation_dtype(tree: optax.Params) -> jnp.dtype:
  """At least float32, wider when a leaf is wider (float64 under x64)."""
  leaves = jax.tree.leaves(tree)
  return jnp.result_type(jnp.float32, *(jnp.asarray(x).dtype for x in leaves))


def global_vdot(a: optax.Updates, b: optax.Updates, dtype: jnp.dtype) -> jax.Array:
  """Sum over all leaves of ``sum(a * b)``, accumulated in ``dtype``.

  Unlike ``optax.tree.vdot`` this never falls back to ``jnp.vdot``, which
  rejects explicitly sharded arrays under jax 0.10: the elementwise product
  and per-leaf sums keep the operands' shardings, so the only communication
  on a mesh is the scalar reduction.
  """
  sums = jax.tree.leaves(
    jax.tree.map(lambda x, y: jnp.sum(x.astype(dtype) * y.astype(dtype)), a, b)
  )
  return sum(sums, jnp.zeros((), dtype))


def never(value: jax.Array) -> jax.Array:
  """A false boolean scalar that XLA cannot prove false, computed from ``value``.

  XLA:CPU writes an updated buffer in place only when the data flow orders
  every reader of the old contents (a reduction such as a norm or the loss)
  before the write; otherwise it first copies the buffer into a params-sized
  temporary. Selecting with ``never(reduction)`` creates that order for
  free: no float equals both infinities.
  """
  return (value == jnp.inf) & (value == -jnp.inf)


def _power_of_two_scale(max_abs: jax.Array) -> jax.Array:
  """``2**-e`` with ``2**e ~ max_abs``: an exact rescaling (1 when zero)."""
  finfo = jnp.finfo(max_abs.dtype)
  exponent = jnp.clip(jnp.floor(jnp.log2(max_abs)), finfo.minexp + 1, finfo.maxexp - 2)
  return jnp.where(max_abs > 0, jnp.exp2(-exponent), jnp.ones_like(max_abs))


def project_conflicting(updates: optax.Updates, delta: optax.Updates) -> Projection:
  """Projects ``updates`` orthogonally to ``delta`` when they conflict.

  Args:
    updates: the gradient ``g`` (any float dtypes).
    delta: the displacement ``theta - theta_ref``, same structure as
      ``updates``. Its leaves may be in a wider dtype than ``updates``.

  Returns:
    A :class:`Projection` with ``updates = g - (omega / ||delta||^2) * delta``
    if ``omega = <delta, g> < 0`` and ``delta != 0``, else ``g`` unchanged
    (bit for bit). Norms and dot products are accumulated in at least
    float32, with ``delta`` rescaled by a power of two so that
    ``||delta||^2`` neither underflows nor overflows.

  References:
    Chakravarthy et al., `PROFIT: A Specialized Optimizer for Deep Fine
    Tuning <https://arxiv.org/abs/2412.01930>`_, Algorithm 1, lines 14-17.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_profit import project_conflicting
    >>> g = {"w": jnp.array([1.0, 1.0])}
    >>> delta = {"w": jnp.array([-1.0, 0.0])}
    >>> project_conflicting(g, delta).updates["w"]
    Array([0., 1.], dtype=float32)
  """
  dtype = accumulation_dtype((updates, delta))
  # ||delta||^2 of a tiny (or huge) delta under- (over-)flows: square
  # delta * scale instead, with scale an exact power of two. Only that
  # reduction reads the scaled delta: a scaled delta shared by several uses
  # is materialized in a params-sized temporary on XLA:CPU.
  max_abs = jnp.max(
    jnp.stack([jnp.max(jnp.abs(d)).astype(dtype) for d in jax.tree.leaves(delta)])
  )
  scale = _power_of_two_scale(max_abs)
  omega = global_vdot(delta, updates, dtype)
  scaled = jax.tree.map(lambda d: d.astype(dtype) * scale, delta)
  sq_norm_s = global_vdot(scaled, scaled, dtype)
  norm_s = jnp.sqrt(sq_norm_s)
  grad_norm = jnp.sqrt(global_vdot(updates, updates, dtype))
  # ~never(...): orders the reduction of g before the updates written into
  # g's buffer (see `never`).
  projected = (omega < 0) & (sq_norm_s > 0) & ~never(grad_norm)
  # coef = omega / ||delta||^2, in an order that stays in range. Double
  # `where`: no division by a zero norm is ever evaluated, and when the
  # projection does not fire the gradient is returned bit for bit.
  coef = jnp.where(
    projected, omega * scale / jnp.where(projected, sq_norm_s, 1) * scale, 0
  )
  new_updates = jax.tree.map(
    lambda g, d: jnp.where(projected, g.astype(dtype) - coef * d, g).astype(g.dtype),
    updates,
    delta,
  )
  nonzero = (norm_s > 0) & (grad_norm > 0)
  cosine = jnp.where(
    nonzero, omega * scale / jnp.where(nonzero, norm_s * grad_norm, 1), 0
  )
  return Projection(
    updates=new_updates,
    omega=omega,
    delta_norm=norm_s / scale,
    cosine=cosine,
    removed_fraction=jnp.where(projected, -cosine, 0),
    projected=projected,
  )
