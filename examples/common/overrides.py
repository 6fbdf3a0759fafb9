"""``--set FIELD=VALUE`` overrides of a frozen dataclass config.

The one helper the examples share (issue 12: every example takes the same
generic override flag instead of a table of per-field flags). Values are parsed
by the field's annotation: ``int``, ``float``, ``str``, ``bool``, ``None``
for optional fields, and tuples of those written comma-separated
(``--set seeds=0,1,2``; ``--set sweep_lrs=`` for the empty tuple).
"""

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def add_set_flag(parser: argparse.ArgumentParser) -> None:
  """Adds the repeatable ``--set FIELD=VALUE`` flag to ``parser``."""
  parser.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    dest="overrides",
    help="override a config field (repeatable), e.g. --set seeds=0,1 "
    "--set batch_size=128; tuples are comma-separated",
  )


def _scalar(kind: Any, text: str) -> Any:
  options = (
    typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union
    else (kind,)
  )
  if text.lower() == "none" and type(None) in options:
    return None
  kind = next(k for k in options if k is not type(None))
  if kind is bool:
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise ValueError(f"expected true or false, got {text!r}")
  if kind in (int, float, str):
    return kind(text)
  raise ValueError(f"type {kind} cannot be set from the command line")


def parse_value(kind: Any, text: str) -> Any:
  """Parses ``text`` as a value of the annotation ``kind``.

  Args:
    kind: a field annotation: a scalar type, an optional scalar, or
      ``tuple[T, ...]`` / ``tuple[T1, T2]`` of scalars.
    text: the command-line text.

  Returns:
    The parsed value.

  Raises:
    ValueError: if ``text`` does not parse as ``kind``.
  """
  if typing.get_origin(kind) is tuple:
    args = typing.get_args(kind)
    items = [item.strip() for item in text.split(",")] if text.strip() else []
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_scalar(args[0], item) for item in items)
    if len(items) != len(args):
      raise ValueError(f"expected {len(args)} comma-separated values, got {text!r}")
    return tuple(_scalar(a, item) for a, item in zip(args, items, strict=True))
  return _scalar(kind, text)


def apply_overrides(config: ConfigT, items: Sequence[str]) -> ConfigT:
  """Returns ``config`` with the ``FIELD=VALUE`` items applied.

  Args:
    config: a dataclass instance.
    items: ``"FIELD=VALUE"`` strings, as collected by :func:`add_set_flag`.

  Returns:
    A copy of ``config`` (``dataclasses.replace``) with the fields set.

  Raises:
    ValueError: naming the item or the field, for an unknown field or a
      value that does not parse.
  """
  fields = {f.name: f for f in dataclasses.fields(config)}
  hints = typing.get_type_hints(type(config))  # Resolves string annotations.
  changes: dict[str, Any] = {}
  for item in items:
    name, sep, text = item.partition("=")
    name = name.strip()
    if not sep or name not in fields:
      known = ", ".join(sorted(fields))
      raise ValueError(
        f"--set expects FIELD=VALUE with FIELD one of the config's fields "
        f"({known}); got {item!r}."
      )
    try:
      changes[name] = parse_value(hints[name], text)
    except ValueError as error:
      raise ValueError(f"--set {name}: {error}") from None
  return dataclasses.replace(config, **changes)
