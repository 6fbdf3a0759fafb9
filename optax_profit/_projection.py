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


def never(value: jax.Array) -> jax.Array:
  """A false boolean scalar that XLA cannot prove false, computed from ``value``.

  XLA:CPU writes an updated buffer in place only when the data flow orders
  every reader of the old contents (a reduction such as a norm or the loss)
  before the write; otherwise it first copies the buffer into a params-sized
  temporary. Selecting with ``never(reduction)`` creates that order for
  free: no float equals both infinities.
  """
  return (value == jnp.inf) & (value == -jnp.inf)


def _scale_exponent(dtype: jnp.dtype) -> int:
  """``e``: squares of ``delta * 2**e`` stay normal for any normal ``delta``.

  (XLA flushes subnormals to zero on CPU and GPU, so they count as zero.)
  """
  return 8 - jnp.finfo(dtype).minexp // 2


def _squares(g: jax.Array, d: jax.Array, dtype: jnp.dtype, e: int) -> tuple:
  """``d*g, g*g`` and ``(d*s)**2`` for ``s = 2**-e, 1, 2**e``, in ``dtype``."""
  g, d = g.astype(dtype), d.astype(dtype)
  up, down = jnp.asarray(2.0**e, dtype), jnp.asarray(2.0**-e, dtype)
  return d * g, g * g, jnp.square(d * down), d * d, jnp.square(d * up)


def _sums(g: jax.Array, d: jax.Array, dtype: jnp.dtype, e: int) -> tuple:
  """The sums of :func:`_squares` (GPU/TPU fuse them into one pass, and on a
  mesh reduce each with a scalar all-reduce)."""
  return tuple(jnp.sum(x) for x in _squares(g, d, dtype, e))


def _sums_in_one_pass(g: jax.Array, d: jax.Array, dtype: jnp.dtype, e: int) -> tuple:
  """The same as one variadic reduction: XLA:CPU runs separate reductions as
  separate passes over ``g`` and ``d``. (On a mesh its partial sums are
  combined by all-gathers of one value per device.)"""
  zeros = (jnp.zeros((), dtype),) * 5
  return jax.lax.reduce(_squares(g, d, dtype, e), zeros, _add, tuple(range(d.ndim)))


def _add(a: tuple, b: tuple) -> tuple:  # module level: jax caches it by identity
  return tuple(x + y for x, y in zip(a, b, strict=True))


def _tree_sums(leaf_sums, updates, delta, dtype, e) -> tuple:
  """``leaf_sums`` of every leaf, added over the leaves."""
  leaves = zip(jax.tree.leaves(updates), jax.tree.leaves(delta), strict=True)
  per_leaf = [leaf_sums(g, d, dtype, e) for g, d in leaves]
  return tuple(sum(c, jnp.zeros((), dtype)) for c in zip(*per_leaf, strict=True))


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
    ``||delta||^2`` neither underflows nor overflows (subnormal entries,
    which XLA flushes to zero, count as zero).

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
  # ||delta||^2 of a tiny (huge) delta under- (over-)flows: the squares of
  # delta * 2**e, delta and delta * 2**-e are summed in the same pass, and the
  # most scaled-up finite sum is used.
  e = _scale_exponent(dtype)
  omega, sq_grad, sq_down, sq_norm, sq_up = jax.lax.platform_dependent(
    updates,
    delta,
    cpu=lambda u, v: _tree_sums(_sums_in_one_pass, u, v, dtype, e),
    default=lambda u, v: _tree_sums(_sums, u, v, dtype, e),
  )
  up_ok, mid_ok = jnp.isfinite(sq_up), jnp.isfinite(sq_norm)
  sq_norm_s = jnp.where(up_ok, sq_up, jnp.where(mid_ok, sq_norm, sq_down))
  scale = jnp.where(up_ok, 2.0**e, jnp.where(mid_ok, 1.0, 2.0**-e)).astype(dtype)
  norm_s = jnp.sqrt(sq_norm_s)
  grad_norm = jnp.sqrt(sq_grad)
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
