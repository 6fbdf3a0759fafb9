"""One rule for reusing an example's compiled train step across runs.

Runs that differ only in values the step does not compile in (a learning
rate held in the optimizer state, the number of epochs, the data sizes, the
output folder) reuse one compiled step. The key of that cache is the whole
config *minus a named list of fields the step does not read*: a field added
to a config later is part of the key until someone names it in that list, so
a forgotten field costs a recompile, never a stale step. Each example's tests
check that building its step reads none of the listed fields (see
:func:`recording`). Every example builds its compiled steps through
:func:`cached`: ``cifar`` and ``cifar_lt`` list theirs as ``NOT_IN_STEP``
beside their step caches; ``toy_regression`` keys its compiled chunks on the
whole config (an empty list); ``sharded_finetune`` compiles per
``Experiment``, which holds one config (so its key is the whole config too).
"""

import dataclasses
import functools
from collections.abc import Callable, Collection
from typing import Any, TypeVar

C = TypeVar("C")
R = TypeVar("R")


def step_key(config: C, not_in_step: Collection[str]) -> C:
  """The cache key of ``config``'s compiled step.

  Args:
    config: a frozen (hashable) dataclass whose fields all have defaults.
    not_in_step: the fields the compiled step does not read.

  Returns:
    ``config`` with the fields of ``not_in_step`` reset to their defaults;
    every other field keeps its value and is part of the key.

  Raises:
    ValueError: naming the entries of ``not_in_step`` that are not fields
      of ``config`` (a renamed field must not silently leave the list).
  """
  fields = {f.name for f in dataclasses.fields(config)}
  unknown = sorted(set(not_in_step) - fields)
  if unknown:
    raise ValueError(
      f"not_in_step names fields {type(config).__name__} lacks: {unknown}"
    )
  default = type(config)()
  return dataclasses.replace(config, **{f: getattr(default, f) for f in not_in_step})


def recording(config: C) -> tuple[C, set[str]]:
  """``config`` as an object that records which of its fields are read.

  For tests: build the step from the returned config, then check that the
  recorded names avoid the example's ``not_in_step`` list.

  Args:
    config: a dataclass instance.

  Returns:
    ``(copy, reads)``: an equal config of a subclass that adds to the set
    ``reads`` the name of every field read from it (properties included).
  """
  names = {f.name for f in dataclasses.fields(config)}
  reads: set[str] = set()

  class Recording(type(config)):  # type: ignore[misc, valid-type]
    def __getattribute__(self, name: str) -> Any:
      if name in names:
        reads.add(name)
      return super().__getattribute__(name)

  values = {n: getattr(config, n) for n in names}
  reads.clear()
  return Recording(**values), reads


def cached(
  not_in_step: Collection[str] = (), maxsize: int = 16
) -> Callable[[Callable[..., R]], Callable[..., R]]:
  """Caches a step builder ``build(config, *args)`` under :func:`step_key`.

  Args:
    not_in_step: the config fields the built step does not read.
    maxsize: how many built steps to keep (least recently used first out).

  Returns:
    A decorator: the decorated ``build(config, *args)`` returns the step
    built for ``step_key(config, not_in_step)`` and ``args`` (hashable),
    building it once. ``__wrapped__`` is the undecorated builder (for
    :func:`recording`); ``cache_clear`` empties the cache.
  """

  def decorate(build: Callable[..., R]) -> Callable[..., R]:
    keyed = functools.lru_cache(maxsize=maxsize)(build)

    @functools.wraps(build)
    def wrapper(config: Any, *args: Any) -> R:
      return keyed(step_key(config, not_in_step), *args)

    wrapper.cache_clear = keyed.cache_clear  # type: ignore[attr-defined]
    wrapper.cache_info = keyed.cache_info  # type: ignore[attr-defined]
    return wrapper

  return decorate
