"""`examples/common/overrides.py`: the `--set FIELD=VALUE` parser every example uses."""

import dataclasses

import pytest

from examples.common import overrides


@dataclasses.dataclass(frozen=True)
class _Config:
  lr: float = 1e-3
  steps: int = 10
  name: str = "a"
  sweep: bool = True
  dtype: str | None = None
  seeds: tuple[int, ...] = (0,)
  domain: tuple[float, float] = (0.0, 1.0)


def test_each_kind_parses():
  config = overrides.apply_overrides(
    _Config(),
    [
      "lr=2e-4",
      "steps=7",
      "name=b",
      "sweep=false",
      "dtype=bfloat16",
      "seeds=1,2,3",
      "domain=0.5, 1.5",
    ],
  )
  assert config == _Config(2e-4, 7, "b", False, "bfloat16", (1, 2, 3), (0.5, 1.5))
  assert type(config.steps) is int
  assert overrides.apply_overrides(_Config(dtype="x"), ["dtype=None"]).dtype is None
  assert overrides.apply_overrides(_Config(), ["seeds="]).seeds == ()


@pytest.mark.parametrize(
  ("item", "match"),
  [
    ("nope=1", "one of the config's fields"),
    ("lr", "FIELD=VALUE"),
    ("steps=1.5", "--set steps"),
    ("sweep=maybe", "--set sweep: expected true or false"),
    ("domain=1,2,3", "--set domain: expected 2"),
    ("lr=None", "--set lr"),
  ],
)
def test_bad_items_name_the_field(item, match):
  with pytest.raises(ValueError, match=match):
    overrides.apply_overrides(_Config(), [item])
