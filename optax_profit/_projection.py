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

from optax_profit import _storage, _xla_cpu


class Diagnostics(NamedTuple):
  """What a projection did: PROFIT's diagnostics of its last main step.

  :class:`optax_profit.ProfitState` holds them in its ``diagnostics`` field
  (zeros before the first main step); :func:`optax_profit.profit_diagnostics`
  reads them from any optimizer state.

  Attributes:
    omega: ``<delta, g>`` before projection, summed over all leaves.
    delta_norm: ``||delta||``.
    cosine: the cosine between ``g`` and ``delta`` (0 if either is zero).
    removed_fraction: ``||g - g'|| / ||g||``, the fraction of the gradient's
      norm that the projection removed (``-cosine`` when it fired, else 0).
    projected: whether the projection fired (``omega < 0`` and
      ``delta != 0``).
  """

  omega: jax.Array
  delta_norm: jax.Array
  cosine: jax.Array
  removed_fraction: jax.Array
  projected: jax.Array


class Projection(NamedTuple):
  """Result of :func:`project_conflicting`.

  Attributes:
    updates: the gradient after projection, ``g'`` (same structure and dtypes
      as the input gradient).
    omega, delta_norm, cosine, removed_fraction, projected: what the
      projection did, as in :class:`Diagnostics` (the :attr:`diagnostics`).
  """

  updates: optax.Updates
  omega: jax.Array
  delta_norm: jax.Array
  cosine: jax.Array
  removed_fraction: jax.Array
  projected: jax.Array

  @property
  def diagnostics(self) -> Diagnostics:
    """The projection's :class:`Diagnostics` (all fields but ``updates``)."""
    return Diagnostics(*self[1:])


def accumulation_dtype(tree: optax.Params) -> jnp.dtype:
  """At least float32, wider when a leaf is wider (float64 under x64)."""
  leaves = jax.tree.leaves(tree)
  return jnp.result_type(jnp.float32, *(jnp.asarray(x).dtype for x in leaves))


def _pow2(k: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """``2**k`` for an integer scalar ``|k| <= -minexp // 2 + 2`` (a normal).

  Built from its bits (``jnp.ldexp``'s general code, which XLA:CPU fuses
  into, and repeats for, every element of the loop that uses it, costs more).
  """
  fi = jnp.finfo(dtype)
  uint = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[jnp.dtype(dtype).itemsize]
  biased = (k.astype(jnp.int32) + (fi.maxexp - 1)).astype(uint)
  return jax.lax.bitcast_convert_type(biased << fi.nmant, dtype)


def _times_pow2(x: jax.Array, k: jax.Array, parts: int) -> jax.Array:
  """``x * 2**k`` in ``parts`` steps of the same sign: an intermediate result
  over- or underflows only where the final one does."""
  dtype = x.dtype
  k = k.astype(jnp.int32)
  for i in range(parts):
    step = k // (parts - i) if i < parts - 1 else k
    x = x * _pow2(step, dtype)
    k = k - step
  return x


def _exponent(m: jax.Array) -> jax.Array:
  """``e`` with ``m * 2**-e`` in ``[0.5, 1)`` (0 for ``m == 0``)."""
  return jnp.where(m > 0, jnp.frexp(m)[1], 0).astype(jnp.int32)


def _scaled(g: jax.Array, d: jax.Array, dtype: jnp.dtype, ed, eg) -> tuple:
  """``d' = d * 2**-ed``, ``g' = g * 2**-eg`` (each in two normal factors)."""
  g, d = g.astype(dtype), d.astype(dtype)
  return _times_pow2(d, -ed, 2), _times_pow2(g, -eg, 2)


def _scaled_terms(g, d, dtype, ed, eg) -> tuple:
  """``d'g', g'^2, d'^2`` of :func:`_scaled`."""
  ds, gs = _scaled(g, d, dtype, ed, eg)
  return ds * gs, gs * gs, ds * ds


def _plain_sums(terms: tuple) -> tuple:
  """Each term summed on its own (GPU and TPU fuse the reductions)."""
  return tuple(jnp.sum(x) for x in terms)


def _scaled_sums(updates, delta, dtype, ed, eg, sum_terms) -> tuple:
  """``<d', g'>, ||g'||^2, ||d'||^2`` over all leaves, each leaf's three
  terms summed by ``sum_terms``."""
  total = (jnp.zeros((), dtype),) * 3
  for g, d in _leaf_pairs(updates, delta):
    sums = sum_terms(_scaled_terms(g, d, dtype, ed, eg))
    total = tuple(t + s for t, s in zip(total, sums, strict=True))
  return total


def _leaf_pairs(updates, delta):
  return zip(jax.tree.leaves(updates), jax.tree.leaves(delta), strict=True)


def _maxima(updates, delta, dtype) -> tuple:
  """``max |d|`` and ``max |g|`` over all leaves."""
  md = mg = jnp.zeros((), dtype)
  for g, d in _leaf_pairs(updates, delta):
    md = jnp.maximum(md, jnp.max(jnp.abs(d.astype(dtype)), initial=0))
    mg = jnp.maximum(mg, jnp.max(jnp.abs(g.astype(dtype)), initial=0))
  return md, mg


def _rescaled_sums(updates, delta, dtype, sum_terms, maxima=_maxima) -> tuple:
  """The sums of ``d * 2**-ed`` and ``g * 2**-eg``, ``ed`` and ``eg`` the
  exponents of ``max |d|`` and ``max |g|`` (from ``maxima(updates, delta,
  dtype)``); and ``ed, eg``."""
  ed, eg = (_exponent(m) for m in maxima(updates, delta, dtype))
  return (*_scaled_sums(updates, delta, dtype, ed, eg, sum_terms), ed, eg)


def _default_sums(updates, delta, dtype, *_) -> tuple:
  """Maxima, then the sums scaled by them (fused reductions, no control flow).

  It takes ``_xla_cpu.projection_sums``' arguments, so that tests and
  benchmarks can trace this lowering on CPU in its place.
  """
  return _rescaled_sums(updates, delta, dtype, _plain_sums)


def _check_real(updates, delta) -> None:
  for name, tree in (("updates", updates), ("delta", delta)):
    _storage.check_real(
      tree, f"`{name}`", "project_conflicting supports real floating leaves only."
    )


def project_conflicting(updates: optax.Updates, delta: optax.Updates) -> Projection:
  """Projects ``updates`` orthogonally to ``delta`` when they conflict.

  Args:
    updates: the gradient ``g`` (real floating leaves of any width).
    delta: the displacement ``theta - theta_ref``, same structure as
      ``updates``. Its leaves may be in a wider dtype than ``updates``.

  Returns:
    A :class:`Projection` with ``updates = g - (omega / ||delta||^2) * delta``
    if ``omega = <delta, g> < 0`` and ``delta != 0``, else ``g`` unchanged
    (bit for bit). ``omega``, ``||delta||^2`` and ``||g||^2`` are accumulated
    in at least float32, from ``delta`` and ``g`` each scaled by a power of
    two: for any finite ``g`` and ``delta`` in the normal range of that
    dtype, the decision and the projection are those of exact arithmetic up
    to its rounding, and no inf or NaN appears (``omega`` and
    ``delta_norm``, diagnostics, saturate at the dtype's largest finite
    value). Subnormal entries, which XLA flushes to zero, count as zero.

  Raises:
    TypeError: naming the leaf, if a leaf of ``updates`` or ``delta`` is
      complex (PROFIT's inner product is defined for real params only).

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
  return project_if(updates, delta, True)


def project_if(
  updates: optax.Updates, delta: optax.Updates, active: jax.typing.ArrayLike
) -> Projection:
  """:func:`project_conflicting`, with ``delta`` counted as zero unless ``active``.

  ``active`` (a boolean scalar, PROFIT's warm-up) masks the sums, not
  ``delta``: a masked copy of ``delta`` would be read by the reductions and
  by the projection, and XLA:CPU materializes a value that a reduction shares
  with another loop (+1 params copy).
  """
  _check_real(updates, delta)
  dtype = accumulation_dtype((updates, delta))
  n = sum(int(jnp.size(x)) for x in jax.tree.leaves(delta))
  # On CPU the unscaled sums (one pass) are used where they cannot have lost
  # a term; otherwise, and always on other platforms, delta and g are scaled
  # by powers of two (from their largest entries) before the sums.
  dg, gg, dd, ed, eg = jax.lax.platform_dependent(
    updates,
    delta,
    cpu=lambda u, v: _xla_cpu.projection_sums(u, v, dtype, max(n, 1), _rescaled_sums),
    default=lambda u, v: _default_sums(u, v, dtype),
  )
  dg, dd = _storage._where(active, dg, 0), _storage._where(active, dd, 0)
  norm_d, norm_g = jnp.sqrt(dd), jnp.sqrt(gg)
  # ~never(...): orders the reduction of g before the updates written into
  # g's buffer (see `_xla_cpu.never`).
  projected = (dg < 0) & (dd > 0) & ~_xla_cpu.never(norm_g)
  # coef = omega / ||delta||^2 in the scaled space (|coef| <= ||g'|| / ||d'||);
  # the double `where` keeps a zero norm out of the division, and the
  # gradient is returned bit for bit where the projection does not fire.
  coef = jnp.where(projected, dg / jnp.where(projected, dd, 1), 0)

  def project(g, d):
    d_scaled = _times_pow2(d.astype(dtype), -ed, 2)
    correction = _times_pow2(coef * d_scaled, eg, 2)
    return jnp.where(projected, g.astype(dtype) - correction, g).astype(g.dtype)

  new_updates = jax.tree.map(project, updates, delta)
  nonzero = (norm_d > 0) & (norm_g > 0)
  cosine = jnp.where(
    nonzero, dg / jnp.where(nonzero, norm_d, 1) / jnp.where(nonzero, norm_g, 1), 0
  )
  big = jnp.finfo(dtype).max
  return Projection(
    updates=new_updates,
    omega=jnp.clip(_times_pow2(dg, ed + eg, 4), -big, big),
    delta_norm=jnp.minimum(_times_pow2(norm_d, ed, 2), big),
    cosine=jnp.clip(cosine, -1, 1),
    removed_fraction=jnp.where(projected, -jnp.clip(cosine, -1, 1), 0),
    projected=projected,
  )
