"""The examples' one compile-cache rule (``examples/common/compile_cache.py``).

A compiled step is keyed on the whole config minus a named list of fields the
step does not read: a new field recompiles until someone lists it, and the
tests below check each example's list against what building its step reads.
"""

import dataclasses

import pytest

from examples.cifar import train as cifar_train
from examples.cifar.configs import default as cifar_default
from examples.cifar_lt import methods as lt_methods
from examples.cifar_lt import train as lt_train
from examples.cifar_lt.configs import default as lt_default
from examples.common import compile_cache


@dataclasses.dataclass(frozen=True)
class _Config:
  n_ref: int = 1
  lr: float = 1e-3
  added_later: str = "a"


def test_every_field_outside_the_list_is_in_the_key():
  key = lambda c: compile_cache.step_key(c, ("lr",))
  base = _Config()
  assert key(dataclasses.replace(base, lr=0.5)) == key(base)
  # A step-relevant field, and one nobody listed: both recompile.
  assert key(dataclasses.replace(base, n_ref=2)) != key(base)
  assert key(dataclasses.replace(base, added_later="b")) != key(base)


def test_a_listed_field_that_does_not_exist_is_an_error():
  with pytest.raises(ValueError, match=r"\['learning_rate'\]"):
    compile_cache.step_key(_Config(), ("learning_rate",))


def test_recording_sees_fields_and_properties():
  config, reads = compile_cache.recording(lt_default.Config(n_ref=3))
  assert config.cycle_length == 4 and reads == {"n_ref"}


def _cifar_configs():
  base = cifar_default.Config(model="cnn", cnn_width=4)
  variants = [
    {},
    {"head_only": True},
    {"lp_epochs": 1},
    {"l2sp_alpha": 1e-2},
    {"warmup_epochs": 1},
  ]
  unsupported = {("profit", "lp_epochs"), ("lookahead", "lp_epochs")}
  unsupported |= {("lookahead", "l2sp_alpha")}
  return [
    (optimizer, dataclasses.replace(base, **v))
    for optimizer in cifar_default.OPTIMIZERS
    for v in variants
    if not any((optimizer, k) in unsupported for k in v)
  ]


@pytest.mark.parametrize("optimizer, config", _cifar_configs())
def test_cifar_step_reads_no_field_outside_its_key(optimizer, config):
  key, reads = compile_cache.recording(
    compile_cache.step_key(config, cifar_train.NOT_IN_STEP)
  )
  cifar_train._finetune_step.__wrapped__(key, optimizer, 1e-3, 10)
  assert reads and not reads & set(cifar_train.NOT_IN_STEP)


def test_cifar_step_is_reused_or_rebuilt_by_its_key():
  build = lambda c: cifar_train._finetune_step(
    compile_cache.step_key(c, cifar_train.NOT_IN_STEP), "profit", 1e-3, 10
  )
  base = cifar_default.Config(model="cnn", cnn_width=4)
  step = build(base)
  assert build(dataclasses.replace(base, epochs=3, lr=0.5, seed=7)) is step
  assert build(dataclasses.replace(base, n_ref=2)) is not step
  assert build(dataclasses.replace(base, sgd_momentum=0.5)) is not step


@pytest.mark.parametrize("method", sorted(lt_methods.METHODS))
def test_cifar_lt_step_reads_no_field_outside_its_key(method):
  config = lt_default.Config(model="cnn", cnn_width=4, n_ref=2)
  key, reads = compile_cache.recording(
    compile_cache.step_key(config, lt_train.NOT_IN_STEP)
  )
  lt_train._train_step.__wrapped__(key, method)
  assert reads and not reads & set(lt_train.NOT_IN_STEP)


def test_cifar_lt_step_is_reused_or_rebuilt_by_its_key():
  build = lambda c: lt_train._train_step(
    compile_cache.step_key(c, lt_train.NOT_IN_STEP), "full_profit"
  )
  base = lt_default.Config(model="cnn", cnn_width=4)
  step = build(base)
  assert build(dataclasses.replace(base, ratio=100.0, budget_batches=5)) is step
  assert build(dataclasses.replace(base, n_ref=3)) is not step
  assert build(dataclasses.replace(base, momentum=0.0)) is not step
