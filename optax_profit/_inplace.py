"""In-place conditional update of large pytrees (used on XLA:CPU only).

``jax.lax.cond`` gives its results their own buffers, so a branch that passes
a large pytree through (AdamW's moments during a reference step) still pays a
full copy on every call. A ``while_loop`` whose body runs zero times or once
updates its carry in place. The price: no reverse-mode derivative, and on GPU
each loop waits for its predicate on the host, so GPU/TPU paths select with
``jnp.where`` instead (``benchmarks/RESULTS.md`` has both measured).
"""

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp

T = TypeVar("T")


def run_if(pred: jax.typing.ArrayLike, fn: Callable[[T], T], operand: T) -> T:
  """Returns ``fn(operand)`` if ``pred`` else ``operand``, updating in place.

  Args:
    pred: a boolean scalar (may be traced).
    fn: a function from ``operand`` to a pytree of the same structure, shapes
      and dtypes (cast with :func:`optax.tree.cast_like` where needed).
    operand: the pytree to update.

  Returns:
    ``fn(operand)`` when ``pred`` is true, ``operand`` otherwise.

  Example:
    >>> import jax.numpy as jnp
    >>> from optax_profit._inplace import run_if
    >>> run_if(jnp.bool_(True), lambda x: x + 1, jnp.zeros(3))
    Array([1., 1., 1.], dtype=float32)
  """

  def cond_fn(carry):
    return carry[0]

  def body_fn(carry):
    return jnp.zeros((), dtype=bool), fn(carry[1])

  pred = jnp.asarray(pred, dtype=bool)
  _, out = jax.lax.while_loop(cond_fn, body_fn, (pred, operand))
  return out
