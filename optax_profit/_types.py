"""The types of a :func:`optax_profit.profit` transformation.

Its state (:class:`ProfitState`, the last main step's :class:`Diagnostics`
inside), its frozen description (:class:`ProfitSpec`) and the transformation
that carries it (:class:`ProfitTransformation`, :func:`profit_spec`).
"""

import dataclasses
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_profit._projection import Diagnostics
from optax_profit._storage import Storage


class ProfitState(NamedTuple):
  """State of :func:`profit`.

  Attributes:
    count: number of ``update`` calls so far (int32), warm-up included.
    theta_ref: with ``storage="copy"``, the weights saved at the start of the
      current cycle; ``None`` otherwise. Only meaningful inside a cycle: after
      a cycle run by :func:`optax_profit.make_train_step` it holds scratch.
    ref_state: state of the reference optimizer; it persists across cycles.
    main_state: state of the main optimizer; it advances once per cycle (and
      once per warm-up step).
    diagnostics: the :class:`Diagnostics` of the last main step (zeros before
      the first one), in at least float32.
    delta: with ``storage="delta"`` (the default), per leaf: for float32 and
      float64 params the current cycle's displacement ``theta - theta_ref``,
      accumulated from the reference updates; for bfloat16 and float16 params
      an ``Anchor`` (``theta_ref`` and the residual the reference updates did
      not apply). ``None`` otherwise.
    cycle_length: the ``n_ref + 1`` the state was built and last updated
      with (int32). ``update`` refuses a state recorded for another cycle
      when both are concrete (outside ``jit``), and
      :func:`optax_profit.make_train_step` checks it on the host;
      :func:`optax_profit.eval_params` reads the phase from it.
    warmup_steps: likewise, the ``warmup_steps`` (int32).
  """

  count: jax.Array
  theta_ref: optax.Params | None
  ref_state: optax.OptState
  main_state: optax.OptState
  diagnostics: Diagnostics
  delta: optax.Updates | None
  cycle_length: jax.Array
  warmup_steps: jax.Array


class Phase(NamedTuple):
  """Where an ``update`` call falls in the cycle (see :func:`phase`)."""

  in_cycle: Any  # past the warm-up (Python True without one)
  first: Any  # the cycle's first reference step
  is_ref: Any  # a reference step


@dataclasses.dataclass(frozen=True)
class ProfitSpec:
  """The frozen description of a :func:`profit` transformation.

  Read it with :func:`profit_spec` (or ``tx.spec``).

  Attributes:
    main: the main optimizer ``O``.
    ref: the reference optimizer ``O_ref``.
    n_ref: reference steps per cycle (a Python int, or traced under
      ``optax.inject_hyperparams``).
    warmup_steps: leading plain ``main`` steps (likewise).
    storage: how the start of a cycle is kept (:class:`Storage`).
  """

  main: optax.GradientTransformationExtraArgs
  ref: optax.GradientTransformationExtraArgs
  n_ref: Any
  warmup_steps: Any
  storage: Storage

  @property
  def cycle_length(self) -> Any:
    """Batches (``update`` calls) per cycle: ``n_ref + 1``."""
    return self.n_ref + 1

  @property
  def is_static(self) -> bool:
    """Whether ``n_ref`` and ``warmup_steps`` are Python ints."""
    return isinstance(self.n_ref, int) and isinstance(self.warmup_steps, int)


def phase(spec: ProfitSpec, count: jax.Array) -> Phase:
  """Where call number ``count`` falls: warm-up, reference or main step."""
  steps = count - jnp.asarray(spec.warmup_steps, count.dtype)
  pos = steps % jnp.asarray(spec.cycle_length, count.dtype)
  if isinstance(spec.warmup_steps, int) and not spec.warmup_steps:
    return Phase(True, pos == 0, pos < spec.n_ref)
  in_cycle = steps >= 0
  return Phase(in_cycle, (pos == 0) & in_cycle, (pos < spec.n_ref) & in_cycle)


# The spec of each `update` function `profit` built. Keyed by the function,
# not the NamedTuple: it survives `tx._replace(init=...)` and wrappers that
# keep `tx.update` (`optax.with_extra_args_support`, a rebuilt
# `GradientTransformationExtraArgs(*tx)`), and a new `update` drops it.
_SPECS: "weakref.WeakKeyDictionary[Callable[..., Any], ProfitSpec]" = (
  weakref.WeakKeyDictionary()
)


class ProfitTransformation(optax.GradientTransformationExtraArgs):
  """The :class:`optax.GradientTransformationExtraArgs` returned by `profit`.

  A plain ``(init, update)`` pair to optax; its ``spec`` property is its
  :class:`ProfitSpec` (see :func:`profit_spec`).
  """

  __slots__ = ()

  @property
  def spec(self) -> ProfitSpec:
    """The :class:`ProfitSpec` of this transformation's ``update``.

    Raises:
      AttributeError: if ``update`` was replaced (``tx._replace(update=...)``)
        by a function `profit` did not build.
    """
    spec = profit_spec(self)
    if spec is None:
      raise AttributeError(
        "This ProfitTransformation's `update` is not one optax_profit.profit "
        "built (was it replaced with `_replace(update=...)`?): it has no spec."
      )
    return spec


def profit_spec(tx: optax.GradientTransformation) -> ProfitSpec | None:
  """Returns the :class:`ProfitSpec` of ``tx`` if `profit` built it, else None.

  The spec belongs to ``tx.update``: any transformation with the ``update``
  function of a `profit` has its spec (``tx._replace(init=...)``,
  ``optax.with_extra_args_support(tx)``), one with another ``update`` (a
  chain, a wrapper) has none.

  Example:
    >>> import optax, optax_profit
    >>> tx = optax_profit.profit(optax.sgd(1e-2), ref=1e-3, n_ref=3)
    >>> optax_profit.profit_spec(tx).cycle_length
    4
    >>> optax_profit.profit_spec(optax.sgd(1e-2)) is None
    True
  """
  if not isinstance(tx, optax.GradientTransformation):
    return None
  try:
    return _SPECS.get(tx.update)
  except TypeError:  # not weak-referenceable: not a function profit built
    return None


def transformation(
  init: optax.TransformInitFn, update: Callable[..., Any], spec: ProfitSpec
) -> ProfitTransformation:
  """``ProfitTransformation(init, update)``, ``update`` registered with ``spec``."""
  _SPECS[update] = spec
  return ProfitTransformation(init, update)
