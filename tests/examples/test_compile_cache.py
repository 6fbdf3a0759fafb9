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
from examples.toy_regression import runs as toy_runs
from examples.toy_regression import train as toy_train
from examples.toy_regression.configs import default as toy_default


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


def test_cached_builds_once_per_key_and_again_for_any_other_field():
  built = []

  @compile_cache.cached(("lr",))
  def build(key, extra):
    built.append((key, extra))
    return object()

  base = _Config()
  step = build(base, 1)
  assert build(dataclasses.replace(base, lr=0.5), 1) is step  # a listed field
  assert len(built) == 1 and built[0][0] == base
  assert build(base, 2) is not step  # another argument
  assert build(dataclasses.replace(base, n_ref=2), 1) is not step
  assert build(dataclasses.replace(base, added_later="b"), 1) is not step
  assert len(built) == 4
  assert build.__wrapped__(base, 1) is not step  # the builder itself
  build.cache_clear()
  assert build(base, 1) is not step


def test_cifar_pretrain_step_is_keyed_on_its_learning_rate():
  base = cifar_default.Config(model="cnn", cnn_width=4)
  step = cifar_train._pretrain_step(base)
  assert cifar_train._pretrain_step(dataclasses.replace(base, epochs=3)) is step
  assert (
    cifar_train._pretrain_step(dataclasses.replace(base, pretrain_lr=0.5)) is not step
  )
  assert cifar_train._pretrain_step(dataclasses.replace(base, cnn_width=8)) is not step


def test_toy_regression_chunks_are_keyed_on_the_whole_config():
  config = dataclasses.replace(toy_default.get_config(), hidden=8)
  model = toy_train.MLP(hidden=8)
  spec = lambda lr: toy_runs.RunSpec("profit", lr, 32, ratio=10.0, convention="cycles")
  build = lambda c, s: toy_train._finetune_chunk_fn(c, model, *toy_train.compile_key(s))
  chunk = build(config, spec(1e-3))
  assert build(config, spec(0.5)) is chunk  # lr and ratio are traced
  # Every config field is step-relevant here: a change recompiles.
  assert build(dataclasses.replace(config, n_ref=2), spec(1e-3)) is not chunk
  assert build(dataclasses.replace(config, ft_steps=7), spec(1e-3)) is not chunk
  base = toy_train._base_chunk_fn(config, model)
  assert toy_train._base_chunk_fn(config, model) is base
  assert (
    toy_train._base_chunk_fn(dataclasses.replace(config, base_lr=0.5), model)
    is not base
  )
