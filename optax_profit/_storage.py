"""Where PROFIT keeps the start of a cycle: its displacement, or a weight copy.

Algorithm 1 saves ``theta_ref = theta`` (line 6), then needs ``delta = theta -
theta_ref`` (line 12) and ``theta_ref`` (line 18). ``"delta"`` keeps the sum of
the reference updates, which counts updates below half an ulp of a weight
that do not move it; ``"copy"`` keeps ``theta_ref`` and is quantized there.
"""

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax


def _where(pred: Any, a: jax.Array, b: jax.Array) -> jax.Array:
  """``jnp.where`` that costs nothing when ``pred`` is a Python bool."""
  if isinstance(pred, bool):
    return a if pred else b
  return jnp.where(pred, a, b)


@dataclasses.dataclass(frozen=True)
class Storage:
  """How a :func:`optax_profit.profit` state remembers the cycle's start.

  Attributes:
    kind: ``"delta"`` (keep the displacement) or ``"copy"`` (keep
      ``theta_ref``).
    dtype: for ``"delta"``, the dtype of the stored displacement; ``None``
      means each leaf's dtype promoted to at least float32 (float64 for
      float64 params). Always ``None`` for ``"copy"``.
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
    object.__setattr__(self, "dtype", dtype)

  @property
  def field(self) -> str:
    """The :class:`optax_profit.ProfitState` field that holds the storage."""
    return "delta" if self.kind == "delta" else "theta_ref"

  def _leaf_dtype(self, p: jax.Array) -> Any:
    if self.dtype is not None:
      return self.dtype
    return jnp.promote_types(p.dtype, jnp.float32)

  def init(self, params: optax.Params) -> optax.Params:
    """The stored tree for a fresh state."""
    if self.kind == "copy":
      # A copy, not an alias: callers donate params and state together.
      return jax.tree.map(lambda p: jnp.array(p, copy=True), params)
    return jax.tree.map(lambda p: jnp.zeros_like(p, self._leaf_dtype(p)), params)

  def record(
    self,
    stored: optax.Params,
    params: optax.Params,
    ref_updates: optax.Updates,
    first: Any,
  ) -> optax.Params:
    """The stored tree after a reference step that applies ``ref_updates``.

    Args:
      stored: the stored tree before the step.
      params: the weights the step starts from.
      ref_updates: the reference optimizer's updates, in the params' dtypes.
      first: whether this is the cycle's first reference step (a Python bool
        or a traced boolean scalar).

    Returns:
      The stored tree: ``theta_ref = params`` on the first step (copy), or
      the displacement plus ``ref_updates`` (delta; restarted on the first).
    """
    if self.kind == "copy":
      return jax.tree.map(lambda t, p: _where(first, p, t), stored, params)

    def accumulate(d, u):
      acc = jnp.promote_types(d.dtype, jnp.float32)
      return _where(first, u.astype(acc), d.astype(acc) + u).astype(d.dtype)

    return jax.tree.map(accumulate, stored, ref_updates)

  def displacement(self, stored: optax.Params, params: optax.Params) -> optax.Updates:
    """``delta = params - theta_ref``, leaf dtypes promoted to at least float32."""
    if self.kind == "copy":
      return jax.tree.map(
        lambda p, t: p.astype(self._leaf_dtype(p)) - t, params, stored
      )
    return jax.tree.map(
      lambda d, p: d.astype(jnp.result_type(d, p, jnp.float32)), stored, params
    )

  def restore(self, stored: optax.Params, params: optax.Params) -> optax.Params:
    """``theta_ref``, in the params' dtypes (line 18 of Algorithm 1)."""
    if self.kind == "copy":
      return stored
    return jax.tree.map(
      lambda p, d: (p - d).astype(p.dtype), params, self.displacement(stored, params)
    )


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
