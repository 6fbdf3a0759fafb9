"""The compute-matched frontier's selection rule and Pareto front, once.

A *point* is one evaluated model of a method family: a moment of a
fine-tuning run (every family gets the same batch budget) or a WiSE-FT
interpolation of one. It has an old-task score and a new-task score, higher
is better (an example scoring errors passes them negated).

The selection rule, the same for every family and every example: at level
``L``, among the family's points whose old-task score is at least ``L`` (up to
:data:`EPS`, so that a level computed as a product such as ``0.9 * base``
cannot drop an exact tie by rounding), take the one with the highest new-task
score; ties go to the higher old-task score, then to the fewer batches, then
to the earlier point. No point keeps the level: no selection (None).
"""

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

P = TypeVar("P")

#: Tolerance of the comparison with a level.
EPS = 1e-9


def select(
  points: Iterable[P],
  level: float,
  *,
  old: Callable[[P], float],
  new: Callable[[P], float],
  batches: Callable[[P], float] | None = None,
) -> P | None:
  """The selection rule (module docstring) at one level.

  Args:
    points: the family's points.
    level: the old-task score a point must keep.
    old: a point's old-task score (higher is better).
    new: a point's new-task score (higher is better).
    batches: a point's batches seen (fewer wins a tie); None: no such tie-break.

  Returns:
    The selected point, or None when no point keeps the level.
  """
  best, best_key = None, None
  for p in points:
    if old(p) < level - EPS:
      continue
    key = (new(p), old(p), -batches(p) if batches is not None else 0.0)
    if best_key is None or key > best_key:
      best, best_key = p, key
  return best


def pareto(
  points: Iterable[P], *, x: Callable[[P], float], y: Callable[[P], float]
) -> list[P]:
  """The points no other point beats on both ``x`` and ``y``, by decreasing ``x``.

  Args:
    points: any points.
    x: the first score (higher is better).
    y: the second score (higher is better).

  Returns:
    The non-dominated points sorted by decreasing ``x`` (and so increasing
    ``y``); of equal points, the first.
  """
  front: list[P] = []
  for p in sorted(points, key=lambda p: (-x(p), -y(p))):
    if not front or y(p) > y(front[-1]):
      front.append(p)
  return front


def levels(
  fractions: Sequence[float], base: float, relative: bool = True
) -> list[float]:
  """The absolute levels of a table.

  Args:
    fractions: the table's levels, as fractions of ``base`` (``relative``) or
      as scores.
    base: the pre-trained model's old-task score.
    relative: whether ``fractions`` are fractions of ``base``.

  Returns:
    The levels, as scores.
  """
  return [f * base if relative else f for f in fractions]
