"""Interleaved timing of several candidates, robust to a noisy shared machine.

Every candidate runs once per *round*, in the same order (A B C ... A B C
...), so that a slow phase of the machine hits all of them; each round's time
is the median of a few back-to-back calls. The reported number is the median
over rounds, and the spread is the interquartile range of those rounds.
"""

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


@dataclasses.dataclass
class Candidate:
  """One thing to time.

  Attributes:
    name: label in the tables.
    run: ``run()`` performs one timed unit of work and blocks until it is
      done (``jax.block_until_ready``).
    units: how many "per" units (batches) one ``run()`` covers; times are
      reported per unit.
    setup: optional ``setup()`` called (untimed) before every ``run()``,
      e.g. to prepare fresh inputs.
  """

  name: str
  run: Callable[[], None]
  units: int = 1
  setup: Callable[[], None] | None = None


@dataclasses.dataclass
class Timing:
  """Per-unit times of one candidate, in seconds.

  Attributes:
    median: median over rounds.
    q25: first quartile over rounds.
    q75: third quartile over rounds.
    rounds: the per-round times.
  """

  median: float
  q25: float
  q75: float
  rounds: list[float]

  def spread(self) -> float:
    """Interquartile range relative to the median."""
    return (self.q75 - self.q25) / self.median if self.median else 0.0


def _quantile(xs: list[float], q: float) -> float:
  xs = sorted(xs)
  pos = q * (len(xs) - 1)
  lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
  return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def interleaved(
  candidates: list[Candidate],
  *,
  rounds: int = 10,
  calls_per_round: int = 3,
  warmup: int = 2,
) -> dict[str, Timing]:
  """Times ``candidates`` in interleaved rounds.

  Args:
    candidates: what to time (already compiled, or compiled by the warm-up).
    rounds: number of rounds.
    calls_per_round: ``run()`` calls per candidate per round; the round's time
      is their median.
    warmup: untimed ``run()`` calls per candidate before the first round.

  Returns:
    ``{name: Timing}`` with times per unit.
  """
  for c in candidates:
    for _ in range(warmup):
      if c.setup is not None:
        c.setup()
      c.run()
  per_round: dict[str, list[float]] = {c.name: [] for c in candidates}
  for _ in range(rounds):
    for c in candidates:
      times = []
      for _ in range(calls_per_round):
        if c.setup is not None:
          c.setup()
        start = time.perf_counter()
        c.run()
        times.append((time.perf_counter() - start) / c.units)
      per_round[c.name].append(statistics.median(times))
  return {
    name: Timing(
      median=statistics.median(ts),
      q25=_quantile(ts, 0.25),
      q75=_quantile(ts, 0.75),
      rounds=ts,
    )
    for name, ts in per_round.items()
  }


def timed_compile(fn: Callable[..., object], *args: object) -> tuple[object, float]:
  """Lowers and compiles the jitted ``fn`` for ``args``.

  Args:
    fn: a ``jax.jit`` function.
    *args: example arguments (arrays or ``jax.ShapeDtypeStruct``).

  Returns:
    ``(compiled, seconds)``: the compiled executable and the wall time of
    tracing, lowering and compiling.
  """
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start


def block(tree: object) -> None:
  """``jax.block_until_ready`` that returns nothing."""
  jax.block_until_ready(tree)


@dataclasses.dataclass
class Holder:
  """Mutable home of donated ``params`` and optimizer ``state`` between calls."""

  params: Any
  state: Any


def memory(compiled: Any) -> dict[str, int]:
  """Bytes of a compiled step from ``memory_analysis()``, by kind."""
  m = compiled.memory_analysis()
  return {
    "arguments": m.argument_size_in_bytes,
    "outputs": m.output_size_in_bytes,
    "aliased": m.alias_size_in_bytes,
    "temporaries": m.temp_size_in_bytes,
  }
