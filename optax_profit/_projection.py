"""The PROFIT projection: remove from a gradient its conflict with a displacement.

Algorithm 1, lines 12-17 of the paper: with ``delta = theta - theta_ref`` and
``omega = <delta, g>`` (one scalar over the whole pytree), a negative ``omega``
means that ``g`` would push the weights further along ``delta``, away from the
reference. Then ``g`` is replaced by its component orthogonal to ``delta``:
``g - (omega / ||delta||^2) * delta``. Otherwise ``g`` is left as it is.
"""

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import optax

T = TypeVar("T")


class Projection(NamedTuple):
  """Result of :func:`project_conflicting`.

  Attributes:
    updates: the gradient after projection (same structure and dtypes as the
      input gradient).
    omega: ``<delta, g>`` before projection, summed over all leaves.
    delta_sq_norm: ``||delta||^2``, summed over all leaves.
    projected: whether the projection fired (``omega < 0`` and
      ``||delta||^2 > 0``).
  """

  updates: optax.Updates
  omega: jax.Array
  delta_sq_norm: jax.Array
  projected: jax.Array


def accumulation_dtype(tree: optax.Params) -> jnp.dtype:
  """Dtype in which PROFIT accumulates dot products over ``tree``.

  At least float32 (bfloat16 and float16 leaves are accumulated in float32),
  wider when a leaf is wider (float64 under ``jax_enable_x64``).

  Args:
    tree: a pytree of arrays.

  Returns:
    The accumulation dtype.
  """
  leaves = jax.tree.leaves(tree)
  return jnp.result_type(jnp.float32, *(jnp.asarray(x).dtype for x in leaves))


def global_vdot(a: optax.Updates, b: optax.Updates, dtype: jnp.dtype) -> jax.Array:
  """Sum over all leaves of ``sum(a * b)``, accumulated in ``dtype``.

  Unlike ``optax.tree.vdot`` this never falls back to ``jnp.vdot``, which
  rejects explicitly sharded arrays under jax 0.10: the elementwise product
  and per-leaf sums keep the operands' shardings, so the only communication
  on a mesh is the scalar reduction.

  Args:
    a: a pytree of arrays.
    b: a pytree of arrays with the structure and shapes of ``a``.
    dtype: accumulation dtype (see :func:`accumulation_dtype`).

  Returns:
    A scalar of dtype ``dtype``.
  """
  sums = jax.tree.leaves(
      jax.tree.map(
          lambda x, y: jnp.sum(x.astype(dtype) * y.astype(dtype)), a, b
      )
  )
  return sum(sums, jnp.zeros((), dtype))


def separate(tree: T, tag: int) -> T:
  """Returns ``tree`` unchanged, behind an XLA optimization barrier.

  XLA merges identical subexpressions. When the displacement ``params -
  theta_ref`` feeds two reductions and an elementwise update, the merged
  subtraction has several users and XLA materialises it in a temporary
  parameter-sized buffer (on CPU the reductions are library kernels that
  cannot absorb a shared producer). Computing it from ``separate(x, k)`` with
  a different ``tag`` per use keeps one subtraction per user, fused into it:
  no temporary, and one pass less over memory.

  Args:
    tree: a pytree of arrays.
    tag: a small int, different for each use that must stay separate.

  Returns:
    ``tree``, with the same values.
  """
  if tag == 0:
    return tree
  _, out = jax.lax.optimization_barrier((jnp.int32(tag), tree))
  return out


def project_conflicting_with(
    updates: optax.Updates,
    make_delta: Callable[[int], optax.Updates],
) -> Projection:
  """:func:`project_conflicting` with the displacement built per use.

  Args:
    updates: the gradient ``g`` (any float dtypes).
    make_delta: ``make_delta(tag)`` returns the displacement ``delta`` (same
      structure as ``updates``); it is called once for each of the three uses
      (``omega``, ``||delta||^2`` and the projected gradient) with tags 0, 1
      and 2, so that a displacement computed from :func:`separate` inputs is
      fused into each use instead of being materialised.

  Returns:
    The :class:`Projection`, as :func:`project_conflicting` computes it.
  """
  dtype = accumulation_dtype((updates, make_delta(0)))
  omega = global_vdot(make_delta(0), updates, dtype)
  delta_sq = make_delta(1)
  delta_sq_norm = global_vdot(delta_sq, delta_sq, dtype)
  projected = (omega < 0) & (delta_sq_norm > 0)
  # A scalar `lax.cond`: no division is ever evaluated on a zero norm, and
  # when the projection does not fire the coefficient is an exact zero.
  coef = jax.lax.cond(
      projected,
      lambda: omega / delta_sq_norm,
      lambda: jnp.zeros((), dtype),
  )

  def project_leaf(g, d):
    return jnp.where(
        projected, g.astype(dtype) - coef * d.astype(dtype), g
    ).astype(g.dtype)

  new_updates = jax.tree.map(project_leaf, updates, make_delta(2))
  return Projection(new_updates, omega, delta_sq_norm, projected)


def project_conflicting(
    updates: optax.Updates, delta: optax.Updates
) -> Projection:
  """Projects ``updates`` orthogonally to ``delta`` when they conflict.

  Args:
    updates: the gradient ``g`` (any float dtypes).
    delta: the displacement ``theta - theta_ref``, same structure as
      ``updates``. Its leaves may be in a wider dtype than ``updates``.

  Returns:
    A :class:`Projection` with ``updates = g - (omega / ||delta||^2) * delta``
    if ``omega = <delta, g> < 0`` and ``||delta||^2 > 0``, else ``g``
    unchanged (bit for bit).

  References:
    Chakravarthy et al., `PROFIT: A Specialized Optimizer for Deep Fine
    Tuning <https://arxiv.org/abs/2412.01930>`_, Algorithm 1, lines 12-17.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_profit import project_conflicting
    >>> g = {"w": jnp.array([1.0, 1.0])}
    >>> delta = {"w": jnp.array([-1.0, 0.0])}
    >>> project_conflicting(g, delta).updates["w"]
    Array([0., 1.], dtype=float32)
  """
  return project_conflicting_with(updates, lambda _: delta)
