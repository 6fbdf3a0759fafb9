"""In-place conditional update of large pytrees.

``jax.lax.cond`` materialises its outputs: XLA gives the result of a
conditional its own buffers, so a branch that merely passes a large pytree
through (say, AdamW's moments during a PROFIT reference step) still pays a full
copy of it, on every call. A ``while_loop`` whose body runs zero times or once
updates its carry in place instead (XLA aliases the carry of a while loop with
its result), so an untouched pytree costs nothing.

Measured on CPU with 10M float32 params and donated buffers: selecting the
PROFIT phase with ``lax.cond`` costs about 4x ``optax.adamw``'s update per
call, with :func:`run_if` about 1.75x (``benchmarks/RESULTS.md`` has the
current numbers).

The prices: reverse-mode differentiation through a ``while_loop`` is not
supported by JAX, so an update built on :func:`run_if` cannot be
differentiated with ``jax.grad`` (forward mode and ``vmap`` work); and on GPU
each loop copies its predicate to the host and waits for it, a pipeline stall
that costs more than a small update itself, which is why
:func:`optax_profit.make_train_step` runs aligned cycles without any.
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
