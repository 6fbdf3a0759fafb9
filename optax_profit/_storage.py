"""Where PROFIT keeps the start of a cycle: its displacement, or a weight copy.

Algorithm 1 saves ``theta_ref = theta`` (line 6), then needs ``delta = theta -
theta_ref`` (line 12) and ``theta_ref`` (line 18). Reference updates enter the
stored displacement in at least float32, before any rounding to the params'
dtype. Per leaf, by the params' dtype:

* ``"delta"``, float32/float64 params: the stored displacement ``X``, the sum
  of the reference updates (float32/float64, or ``Storage.dtype``). The
  reference steps land the weights on ``theta_ref + X`` rounded once
  (``theta_ref`` recomputed as ``params - X``, which rounds back to it), so
  the restore ``params - X`` gives ``theta_ref`` back up to one rounding,
  whatever ``n_ref``.
* ``"delta"``, bfloat16/float16 params: an :class:`Anchor`, ``theta_ref`` in
  the params' dtype plus a record (bfloat16, or ``Storage.dtype``) of what the
  reference updates did not apply. ``delta = (params - theta_ref) +
  residual`` in float32; the restore is ``theta_ref`` exactly. Same memory
  as a float32 displacement.
* ``"copy"``: ``theta_ref`` in the params' dtype (Algorithm 1 literally;
  ``delta`` quantized where reference updates are below half an ulp).
"""

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax


class Anchor(NamedTuple):
  """The ``"delta"`` storage of one bfloat16 or float16 leaf.

  Attributes:
    theta_ref: the weights at the start of the cycle, in the params' dtype.
    residual: the sum of what the cycle's reference updates did not apply
      (``u - (fl(p + u) - p)`` per step, computed in float32): the part of
      the displacement below the weights' resolution.
  """

  theta_ref: jax.Array
  residual: jax.Array


def _where(pred: Any, a: jax.Array, b: jax.Array) -> jax.Array:
  """``jnp.where`` that costs nothing when ``pred`` is a Python bool."""
  if isinstance(pred, bool):
    return a if pred else b
  return jnp.where(pred, a, b)


def _narrow(dtype: Any) -> bool:
  """Whether a params dtype gets an :class:`Anchor` (bfloat16, float16)."""
  return jnp.dtype(dtype).itemsize < 4


def _round(x: jax.Array, dtype: Any) -> jax.Array:
  """``x`` rounded to ``dtype``'s precision and range, kept in ``x.dtype``.

  ``x.astype(dtype).astype(x.dtype)`` is not enough: XLA drops such a pair
  of conversions inside a fusion (e.g. a bfloat16 sum computed in float32).
  """
  if jnp.dtype(dtype).itemsize >= x.dtype.itemsize:
    return x
  fi = jnp.finfo(dtype)
  rounded = jax.lax.reduce_precision(x, exponent_bits=fi.nexp, mantissa_bits=fi.nmant)
  step = float(fi.smallest_subnormal)
  if step < float(jnp.finfo(x.dtype).tiny):
    return rounded  # (bfloat16: its subnormals are flushed in float32 too)
  # reduce_precision flushes the target's subnormals (float16: 6e-8 to
  # 6e-5) to zero; a float16 weight or update there is rounded to the
  # multiple of the subnormal spacing, as a conversion does.
  scale = jnp.asarray(1 / step, x.dtype)
  subnormal = jnp.round(x * scale) / scale
  return jnp.where(jnp.abs(x) < float(fi.tiny), subnormal, rounded)


def acc_dtype(*dtypes: Any) -> Any:
  """At least float32, wider if one of ``dtypes`` is (float64 under x64)."""
  return jnp.result_type(jnp.float32, *dtypes)


def check_real(
  tree: Any,
  what: str = "params",
  supported: str = (
    "PROFIT supports real floating params only (split a complex weight into "
    "its real and imaginary parts)."
  ),
) -> None:
  """Raises ``TypeError`` naming the first complex leaf of ``tree``."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
      raise TypeError(
        f"Leaf {jax.tree_util.keystr(path) or '<root>'} of {what} is complex "
        f"({jnp.result_type(leaf)}): {supported}"
      )


@dataclasses.dataclass(frozen=True)
class Storage:
  """How a :func:`optax_profit.profit` state remembers the cycle's start.

  Attributes:
    kind: ``"delta"`` (keep the displacement) or ``"copy"`` (keep
      ``theta_ref``).
    dtype: for ``"delta"``: the dtype of the stored displacement of float32
      and float64 leaves (``None``: the leaf's dtype), and of the residual
      record of bfloat16 and float16 leaves (``None``: bfloat16). It must
      have float32's exponent range (bfloat16, float32, float64). Always
      ``None`` for ``"copy"``.
  """

  kind: Literal["delta", "copy"] = "delta"
  dtype: Any = None

  def __post_init__(self):
    """Checks ``kind`` and ``dtype``; a dtype name becomes a ``jnp.dtype``."""
    if self.kind not in ("delta", "copy"):
      raise ValueError(
        f"`storage` must be 'delta' (the default) or 'copy', got {self.kind!r}."
      )
    if self.dtype is None:
      return
    if self.kind == "copy":
      raise ValueError(
        "`delta_dtype` applies to storage='delta' only: storage='copy' keeps "
        "theta_ref in the params' dtypes."
      )
    try:
      dtype = jnp.dtype(self.dtype)
    except TypeError:
      dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
        "`delta_dtype` (the Storage's dtype) must be None or a floating dtype "
        f"such as jnp.bfloat16 or 'bfloat16', got {self.dtype!r}."
      )
    if jnp.finfo(dtype).minexp > jnp.finfo(jnp.float32).minexp:
      raise ValueError(
        f"`delta_dtype` {dtype.name} cannot hold small reference updates (its "
        f"smallest normal is {float(jnp.finfo(dtype).tiny):.3g}; float32's is "
        "1.18e-38): use jnp.bfloat16 (same memory), jnp.float32 or None."
      )
    object.__setattr__(self, "dtype", dtype)

  @property
  def field(self) -> str:
    """The :class:`optax_profit.ProfitState` field that holds the storage."""
    return "delta" if self.kind == "delta" else "theta_ref"

  def init(self, params: optax.Params) -> optax.Params:
    """The stored tree for a fresh state.

    Raises:
      TypeError: naming the leaf, if a leaf of ``params`` is complex.
    """
    check_real(params)
    # Copies, not aliases: callers donate params and state together.
    if self.kind == "copy":
      return jax.tree.map(lambda p: jnp.array(p, copy=True), params)

    def leaf(p):
      if _narrow(p.dtype):
        residual = jnp.zeros_like(p, self.dtype or jnp.bfloat16)
        return Anchor(jnp.array(p, copy=True), residual)
      return jnp.zeros_like(p, self.dtype or p.dtype)

    return jax.tree.map(leaf, params)

  def record(
    self,
    stored: optax.Params,
    params: optax.Params,
    ref_updates: optax.Updates,
    first: Any,
  ) -> tuple[optax.Params, optax.Updates]:
    """A reference step (lines 6 and 9): the stored tree and the updates.

    Args:
      stored: the stored tree before the step.
      params: the weights the step starts from.
      ref_updates: the reference optimizer's updates, in at least float32
        (they enter the displacement before any rounding to the params').
      first: whether this is the cycle's first reference step (a Python bool
        or a traced boolean scalar).

    Returns:
      ``(stored, updates)``: the stored tree after the step, and the updates
      to apply, in the params' dtypes. Float32/float64 ``"delta"`` leaves land
      on ``fl(theta_ref + X)`` (``X`` the new displacement); other leaves on
      ``fl(params + ref_updates)``.
    """
    stored_out, updates_out = {}, {}

    def leaf(p, s, u, key):
      acc = acc_dtype(p.dtype, u.dtype)
      u = u.astype(acc)
      if self.kind == "copy":
        updates_out[key] = u.astype(p.dtype)
        stored_out[key] = _where(first, p, s)
      elif isinstance(s, Anchor):
        upd = _round(u, p.dtype)
        p_acc = p.astype(acc)
        applied = _round(p_acc + upd, p.dtype) - p_acc  # exact in float32
        residual = u - applied + _where(first, 0, s.residual.astype(acc))
        updates_out[key] = upd.astype(p.dtype)
        stored_out[key] = Anchor(
          _where(first, p, s.theta_ref), residual.astype(s.residual.dtype)
        )
      else:
        # X, the displacement, is written before the updates are computed
        # from it (and from u, p): no value of the old X is read after the
        # new one is written, so both are updated in place.
        acc = acc_dtype(acc, s.dtype)
        if jnp.dtype(s.dtype).itemsize < jnp.dtype(p.dtype).itemsize:
          # X narrower than the weights: it cannot locate theta_ref to
          # their precision. The updates are applied as they are and the
          # restore, params - X, misses theta_ref by X's rounding.
          stored_out[key] = _where(first, u, s.astype(acc) + u).astype(s.dtype)
          updates_out[key] = u.astype(p.dtype)
          return key
        p_acc = p.astype(acc)
        anchor = _where(first, p_acc, _round(p_acc - s.astype(acc), p.dtype))
        x = _round(_where(first, u, s.astype(acc) + u), s.dtype)

        def lands(c):  # `_land` finds theta_ref and the restore returns to it
          found = _round(p_acc - _where(first, jnp.zeros_like(c), c - u), p.dtype)
          back = _round(_round(anchor + c, p.dtype) - c, p.dtype)
          return (found == anchor) & (back == anchor)

        # Where x does not, a neighbour of x (an ulp of the displacement
        # away) usually does, or, where the weight changed binade, the
        # displacement the rounded weight realizes.
        up, down = (_nextafter(x, s.dtype, sign) for sign in (1, -1))
        applied = _round(_round(anchor + x, p.dtype) - anchor, s.dtype)
        pick = x
        for c in (applied, down, up, x):
          pick = jnp.where(lands(c), c, pick)
        stored_out[key] = pick.astype(s.dtype)
        updates_out[key] = _land(p, pick, u, first, acc)
      return key

    keys = jax.tree.map(
      leaf, params, stored, ref_updates, _keys(params), is_leaf=_is_anchor
    )
    pick = lambda d: jax.tree.map(lambda k: d[k], keys)
    return pick(stored_out), pick(updates_out)

  def offset(self, stored: optax.Params, params: optax.Params) -> optax.Updates:
    """``params - theta_ref`` as the main step undoes it, in at least float32."""

    def leaf(p, s):
      acc = acc_dtype(p.dtype, _dtype(s))
      if isinstance(s, Anchor):
        return p.astype(acc) - s.theta_ref.astype(acc)
      if self.kind == "copy":
        return p.astype(acc) - s.astype(acc)
      return s.astype(acc)

    return jax.tree.map(leaf, params, stored, is_leaf=_is_anchor)

  def displacement(self, stored: optax.Params, params: optax.Params) -> optax.Updates:
    """``delta`` of line 12: what the projection uses.

    For ``"delta"``: the sum of the reference updates, the stored
    displacement itself for float32/float64 leaves (in its dtype: the
    projection converts it where it reads it), ``(params - theta_ref) +
    residual`` in float32 for bfloat16/float16 leaves (which includes any
    edit of the params between calls). For ``"copy"``: ``params -
    theta_ref`` in at least float32.
    """
    offset = self.offset(stored, params)

    def leaf(o, s):
      if isinstance(s, Anchor):
        return o + s.residual.astype(o.dtype)
      return o if self.kind == "copy" else s

    return jax.tree.map(leaf, offset, stored, is_leaf=_is_anchor)

  def restore(self, stored: optax.Params, params: optax.Params) -> optax.Params:
    """``theta_ref``, in the params' dtypes (line 18 of Algorithm 1).

    Exact for ``"copy"`` and for bfloat16/float16 ``"delta"`` leaves;
    ``fl(params - X)`` for float32/float64 ``"delta"`` leaves.
    """

    def leaf(p, s):
      if isinstance(s, Anchor):
        return s.theta_ref
      if self.kind == "copy":
        return s
      acc = acc_dtype(p.dtype, s.dtype)
      return _round(p.astype(acc) - s.astype(acc), p.dtype).astype(p.dtype)

    return jax.tree.map(leaf, params, stored, is_leaf=_is_anchor)


def _land(p: jax.Array, x: jax.Array, u: jax.Array, first: Any, acc: Any) -> jax.Array:
  """Updates taking ``p`` to ``fl(theta_ref + x)``, from ``p``, ``u`` and ``x``.

  ``theta_ref`` is recovered as ``fl(p - x_prev)`` with ``x_prev = fl(x -
  u)``, the previous displacement; the weights were left at
  ``fl(theta_ref + x_prev)``, so this rounds back to ``theta_ref`` except
  where a weight changed binade or a rounding tied (an ulp, rarely).
  """
  p_acc = p.astype(acc)
  x_prev = _where(first, jnp.zeros_like(x), x - u)
  anchor = _round(p_acc - x_prev, p.dtype)
  return (_round(anchor + x, p.dtype) - p_acc).astype(p.dtype)


def _nextafter(x: jax.Array, dtype: Any, sign: int) -> jax.Array:
  """The neighbour of ``x`` (a value of ``dtype``) towards ``sign * inf``."""
  y = x.astype(dtype)
  return jnp.nextafter(y, jnp.asarray(sign * jnp.inf, dtype)).astype(x.dtype)


def _is_anchor(x: Any) -> bool:
  return isinstance(x, Anchor)


def _dtype(s: Any) -> Any:
  return s.theta_ref.dtype if isinstance(s, Anchor) else s.dtype


def _keys(params: optax.Params) -> optax.Params:
  """Each leaf replaced by its index (to collect several outputs per leaf)."""
  leaves, treedef = jax.tree.flatten(params)
  return jax.tree.unflatten(treedef, list(range(len(leaves))))


def storage_from_args(storage: Any, delta_dtype: Any) -> Storage:
  """Validates :func:`optax_profit.profit`'s ``storage`` and ``delta_dtype``."""
  if isinstance(storage, Storage):
    if delta_dtype is not None:
      raise ValueError(
        "Pass `delta_dtype` inside the Storage (Storage('delta', dtype)), not "
        "beside it."
      )
    return storage
  if not isinstance(storage, str):
    raise TypeError(
      "`storage` must be 'delta', 'copy' or an optax_profit.Storage, got "
      f"{type(storage).__name__} {storage!r}."
    )
  return Storage(storage, delta_dtype)
