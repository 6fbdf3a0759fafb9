"""Tests of the toy 2-D regression example (examples/toy_regression)."""

import dataclasses
import json
import math
import pathlib
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from examples.toy_regression import (
  input_pipeline,
  main,
  reporting,
  runs,
  train,
)
from examples.toy_regression.configs import default, quick, study

OLD, NEW = (-1.0, 1.0), (0.8, 1.5)

# A tiny but complete run of every family: 2 seeds; the table (full, head,
# PROFIT in both step conventions) at batch size 16; the sweep (full at one
# lr, head, L2-SP at two alphas, PROFIT at one lr and ratio, WiSE-FT of the
# full and PROFIT runs) at batch sizes 16 and 32.
TINY_ARGV = [
  "--set", "seeds=0,1",
  "--set", "base_steps=30",
  "--set", "ft_steps=8",
  "--set", "batch_size=16",
  "--set", "batch_sizes=16,32",
  "--set", "n_train=512",
  "--set", "n_test=256",
  "--set", "n_val=128",
  "--set", "eval_every=4",
  "--set", "sweep_lrs=1e-3",
  "--set", "sweep_ratios=10",
  "--set", "sweep_profit_lrs=5e-4",
  "--set", "l2sp_alphas=1,100",
  "--set", "wise_points=5",
  "--set", "plot_grid=21",
]  # fmt: skip


def _datasets(
  seed: int = 0, n_train: int = 20_000, n_test: int = 4_000, n_val: int = 4_000
):
  return input_pipeline.make_datasets(
    seed,
    n_train=n_train,
    n_test=n_test,
    n_val=n_val,
    old_domain=OLD,
    new_domain=NEW,
    noise_std=1.0,
  )


def _f(x1: float, x2: float) -> float:
  """f(x) = sin(10 |x|), written independently of the example's code."""
  return math.sin(10.0 * math.hypot(x1, x2))


# Data.


def test_target_function_at_known_points():
  points = np.array([[0.0, 0.0], [0.3, 0.4], [math.pi / 20, 0.0], [-0.6, 0.8]])
  expected = [0.0, math.sin(5.0), 1.0, math.sin(10.0)]
  np.testing.assert_allclose(input_pipeline.target_fn(points), expected, atol=1e-12)


@pytest.mark.parametrize(
  "split", ["old_train", "old_test", "old_val", "new_train", "new_test", "new_val"]
)
def test_inputs_lie_in_and_cover_their_domain(split):
  data = getattr(_datasets(), split)
  low, high = OLD if split.startswith("old") else NEW
  assert data.x.shape[1] == 2 and data.x.dtype == np.float32
  assert data.x.shape[0] == data.y.shape[0]
  assert np.all(data.x >= low) and np.all(data.x <= high)
  # Uniform: both ends reached, mean in the middle, the two coordinates
  # independent.
  span = high - low
  np.testing.assert_allclose(data.x.min(0), low, atol=0.01 * span)
  np.testing.assert_allclose(data.x.max(0), high, atol=0.01 * span)
  n = data.x.shape[0]
  se = span / math.sqrt(12 * n)
  np.testing.assert_allclose(data.x.mean(0), (low + high) / 2, atol=5 * se)
  assert abs(np.corrcoef(data.x.T)[0, 1]) < 5 / math.sqrt(n)


def test_test_targets_are_noise_free_and_training_targets_are_noisy():
  data = _datasets()
  for split in (data.old_test, data.new_test, data.old_val, data.new_val):
    expected = np.array([_f(a, b) for a, b in split.x.astype(np.float64)])
    np.testing.assert_allclose(split.y, expected, atol=1e-6)
  for split in (data.old_train, data.new_train):
    expected = np.array([_f(a, b) for a, b in split.x.astype(np.float64)])
    noise = split.y - expected
    n = noise.size
    # N(0, 1): mean 0, variance 1, kurtosis 3, uncorrelated with the target.
    assert abs(noise.mean()) < 5 / math.sqrt(n)
    assert abs(noise.var() - 1.0) < 5 * math.sqrt(2 / n)
    assert abs(np.mean(noise**4) / noise.var() ** 2 - 3.0) < 0.2
    assert abs(np.corrcoef(noise, expected)[0, 1]) < 5 / math.sqrt(n)


def test_datasets_are_reproducible_and_differ_between_seeds():
  a, b, c = _datasets(0, 1000, 100), _datasets(0, 1000, 100), _datasets(1, 1000, 100)
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(a.old_train.x, c.old_train.x)
  # The splits are drawn independently of each other.
  assert not np.array_equal(a.old_test.x[:50], a.old_train.x[:50])
  assert not np.array_equal(a.old_test.x[:50], a.old_val.x[:50])
  # The held-out sets do not change the other splits.
  without = _datasets(0, 1000, 100, n_val=0)
  assert without.old_val.x.shape == (0, 2)
  chex.assert_trees_all_equal(a[:4], without[:4])


def test_epoch_sampler_visits_every_example_once_per_epoch():
  sampler = input_pipeline.EpochSampler(num_examples=12, batch_size=4, seed=0)
  epochs = sampler.next_indices(6).reshape(2, 12)
  for epoch in epochs:
    assert sorted(epoch.tolist()) == list(range(12))
  assert not np.array_equal(epochs[0], epochs[1])
  with pytest.raises(ValueError, match="batch_size"):
    input_pipeline.EpochSampler(num_examples=3, batch_size=4, seed=0)


# Model.


def test_model_param_shapes():
  params = train.init_params(train.MLP(), jax.random.key(0))["params"]
  shapes = jax.tree.map(jnp.shape, params)
  assert shapes == {
    "dense_1": {"kernel": (2, 500), "bias": (500,)},
    "norm_1": {"scale": (500,), "bias": (500,)},
    "dense_2": {"kernel": (500, 500), "bias": (500,)},
    "norm_2": {"scale": (500,), "bias": (500,)},
    "head": {"kernel": (500, 1), "bias": (1,)},
  }


def _numpy_forward(params: dict, x: np.ndarray) -> np.ndarray:
  """Dense -> LayerNorm -> ReLU, twice, then Dense: written with NumPy."""

  def layer_norm(h, p):
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    return (h - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]

  p = jax.tree.map(lambda t: np.asarray(t, np.float64), params)
  h = x @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
  h = np.maximum(layer_norm(h, p["norm_1"]), 0.0)
  h = h @ p["dense_2"]["kernel"] + p["dense_2"]["bias"]
  h = np.maximum(layer_norm(h, p["norm_2"]), 0.0)
  return (h @ p["head"]["kernel"] + p["head"]["bias"])[:, 0]


def test_layer_norm_after_every_layer_but_the_last():
  model = train.MLP()
  variables = train.init_params(model, jax.random.key(1))
  # Non-trivial LayerNorm parameters, so that their placement matters.
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
    lambda t: t + 0.3 * rng.standard_normal(t.shape).astype(t.dtype), variables
  )
  x = rng.uniform(-1.5, 1.5, size=(64, 2)).astype(np.float32)
  np.testing.assert_allclose(
    model.apply(variables, x),
    _numpy_forward(variables["params"], x.astype(np.float64)),
    rtol=2e-4,
    atol=2e-4,
  )


# Optimizers.


def _bits(tree):
  return jax.tree.map(lambda t: np.asarray(t).view(np.uint32), tree)


def _spec(method: str, lr: float = 1e-3, batch_size: int = 32, **kwargs):
  if method == "profit":
    kwargs.setdefault("ratio", 10.0)
    kwargs.setdefault("convention", "cycles")
  if method == "l2sp":
    kwargs.setdefault("alpha", 10.0)
  return runs.RunSpec(method, lr, batch_size, **kwargs)


def _finetune_params(method: str, steps: int = 5, **overrides):
  config = dataclasses.replace(
    default.get_config(), n_train=256, n_test=64, n_val=64, batch_size=32, eval_every=1
  )
  spec = _spec(method)
  model = train.MLP()
  base = train.init_params(model, jax.random.key(3))
  data = input_pipeline.make_datasets(
    3, n_train=256, n_test=64, n_val=64, old_domain=OLD, new_domain=NEW, noise_std=1.0
  )
  chunk = train._finetune_chunk_fn(config, model, *train.compile_key(spec))
  config = dataclasses.replace(config, ft_steps=steps, **overrides)
  params, record = train.finetune(
    spec, chunk, train.make_errors_fn(model), base, data, config, seed=0
  )
  return base, params, record


def test_head_only_leaves_the_other_layers_bit_identical():
  base, tuned, record = _finetune_params("head")
  assert record["batches"] == 5
  for layer in train.LAYERS:
    before, after = base["params"][layer], tuned["params"][layer]
    if layer == train.HEAD:
      for leaf_before, leaf_after in zip(
        jax.tree.leaves(before), jax.tree.leaves(after), strict=True
      ):
        assert not np.array_equal(leaf_before, leaf_after)
    else:
      chex.assert_trees_all_equal(_bits(before), _bits(after))


def test_full_fine_tuning_moves_every_layer():
  base, tuned, _ = _finetune_params("full")
  for layer in train.LAYERS:
    for before, after in zip(
      jax.tree.leaves(base["params"][layer]),
      jax.tree.leaves(tuned["params"][layer]),
      strict=True,
    ):
      assert not np.array_equal(before, after), layer


def test_evaluations_are_dense_early_then_every_eval_every_batches():
  _, _, record = _finetune_params("full", 21, eval_every=8, eval_early=3)
  # Chunks of 3 batches; every chunk evaluated up to batch 8, then at the
  # first chunk past each multiple of 8, and at the end.
  assert record["curve"]["batches"] == [0, 3, 6, 9, 18, 21]
  assert len(record["curve"]["old_error"]) == 6


def test_profit_reference_step_is_sgd_at_lr_over_ratio():
  config = default.get_config()
  for convention in ("cycles", "batches"):
    spec = _spec("profit", 5e-4, ratio=100.0, convention=convention)
    tx = train.finetune_optimizer(spec, config)
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = {"w": jnp.array([0.5, 0.25, -4.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    # PROFIT lands the weights on the float64 step rounded once (its updates
    # differ from -lr/ratio * g by that rounding; see the CHANGELOG).
    exact = np.float64(params["w"]) - 5e-6 * np.float64(grads["w"])
    landed = np.asarray(optax.apply_updates(params, updates)["w"], np.float64)
    np.testing.assert_allclose(landed, exact, rtol=2.0**-24, atol=0)
    assert not np.array_equal(landed, np.float64(params["w"]))


def test_rmsprop_has_pytorch_semantics():
  # PyTorch RMSprop (alpha=0.99, eps=1e-8, no centering, no momentum):
  # v = 0.99 v + 0.01 g^2; p -= lr * g / (sqrt(v) + eps).
  config = default.get_config()
  tx = train.rmsprop(config, 0.1)
  p = np.array([1.0, 2.0])
  v = np.zeros(2)
  params = {"w": jnp.asarray(p, jnp.float32)}
  state = tx.init(params)
  for g in ([1e-9, 3.0], [2e-9, -1.0], [0.5, 0.5]):
    g = np.asarray(g)
    v = 0.99 * v + 0.01 * g**2
    p = p - 0.1 * g / (np.sqrt(v) + 1e-8)
    updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params["w"], p, rtol=1e-5)


def test_base_cache_key_depends_on_the_base_training_only():
  config = default.get_config()
  workdir = pathlib.Path("/w")
  same = runs.base_cache_dir(workdir, config, 0)
  assert runs.base_cache_dir(workdir, config, 1) != same
  changed = dataclasses.replace(config, base_steps=10)
  assert runs.base_cache_dir(workdir, changed, 0) != same
  # Fine-tuning settings do not invalidate the base model.
  ft_only = dataclasses.replace(
    config, ft_lr=1.0, sweep_ratios=(3.0,), batch_sizes=(8,)
  )
  assert runs.base_cache_dir(workdir, ft_only, 0) == same


def test_run_cache_key_depends_on_the_fine_tuning_setup_not_on_the_sweep():
  config = default.get_config()
  workdir = pathlib.Path("/w")
  spec = _spec("l2sp")
  same = runs.run_path(workdir, config, spec, 0)
  assert runs.run_path(workdir, config, spec, 1) != same
  assert runs.run_path(workdir, config, _spec("l2sp", alpha=1.0), 0) != same
  for field, value in (("ft_steps", 10), ("base_steps", 10), ("wise_points", 3)):
    changed = dataclasses.replace(config, **{field: value})
    assert runs.run_path(workdir, changed, spec, 0) != same, field
  # Adding settings to the sweep keeps the finished runs.
  more = dataclasses.replace(config, sweep_lrs=(3e-3,), l2sp_alphas=(0.5,), seeds=(7,))
  assert runs.run_path(workdir, more, spec, 0) == same


# L2-SP and WiSE-FT.


def _perturbed(params, scale: float, seed: int):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda t: t + scale * rng.standard_normal(t.shape).astype(t.dtype), params
  )


def test_l2sp_penalty_and_gradient_against_a_direct_computation():
  model = train.MLP(hidden=16)
  pre = train.init_params(model, jax.random.key(0))
  params = _perturbed(pre, 0.1, 1)
  alpha = 3.5
  # Direct: alpha / 2 * sum of squared differences over every layer but the head.
  diff = {
    layer: jax.tree.map(
      lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
      params["params"][layer],
      pre["params"][layer],
    )
    for layer in train.LAYERS
  }
  expected = (
    0.5
    * alpha
    * sum(
      float(np.sum(d**2))
      for layer in train.LAYERS
      if layer != train.HEAD
      for d in jax.tree.leaves(diff[layer])
    )
  )
  penalty = train.l2sp_penalty(params, pre, alpha)
  np.testing.assert_allclose(float(penalty), expected, rtol=1e-5)
  # The loss is the MSE (a NumPy forward pass) plus the penalty.
  rng = np.random.default_rng(2)
  x = rng.uniform(0.8, 1.5, size=(32, 2)).astype(np.float32)
  y = rng.standard_normal(32).astype(np.float32)
  batch = {"x": x, "y": y}
  loss = train.make_l2sp_loss_fn(model, pre, alpha)(params, batch)
  mse = np.mean((_numpy_forward(params["params"], x.astype(np.float64)) - y) ** 2)
  np.testing.assert_allclose(float(loss), mse + expected, rtol=1e-4)
  # Its gradient adds alpha * (theta - theta_pre) on the backbone, 0 on the head.
  with_penalty = jax.grad(train.make_l2sp_loss_fn(model, pre, alpha))(params, batch)
  without = jax.grad(train.make_loss_fn(model))(params, batch)
  for layer in train.LAYERS:
    added = jax.tree.map(
      lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
      with_penalty["params"][layer],
      without["params"][layer],
    )
    scale = 0.0 if layer == train.HEAD else alpha
    for got, d in zip(
      jax.tree.leaves(added), jax.tree.leaves(diff[layer]), strict=True
    ):
      np.testing.assert_allclose(got, scale * d, rtol=1e-3, atol=1e-6)


def test_l2sp_with_a_large_alpha_stays_nearer_the_base_than_full_fine_tuning():
  base, full, _ = _finetune_params("full", 20)
  _, l2sp, _ = _finetune_params("l2sp", 20)  # alpha 10

  def distance(tree):
    backbone = {k: v for k, v in tree["params"].items() if k != train.HEAD}
    base_backbone = {k: v for k, v in base["params"].items() if k != train.HEAD}
    return float(optax.tree.norm(jax.tree.map(jnp.subtract, backbone, base_backbone)))

  assert distance(l2sp) < 0.9 * distance(full)


# The frontier metric.


def _point(family, name, batches, old_val, new_val, old_test, new_test):
  return {
    "family": family,
    "point": name,
    "batches": batches,
    "old_val": old_val,
    "new_val": new_val,
    "old_error": old_test,
    "new_error": new_test,
  }


def test_frontier_picks_the_best_held_out_point_within_each_level():
  # Two seeds; base original-data MSE 0.1 / 0.2 (held out), 0.1 / 0.1 (test).
  base_val, base_test = [0.1, 0.2], [0.1, 0.1]
  points = [
    # Held-out old-error ratios (per seed, then mean): 1.5, 3.0, 6.0.
    _point("full", "a", 10, [0.15, 0.3], [2.0, 2.2], [0.2, 0.2], [2.1, 2.3]),
    _point("full", "b", 20, [0.3, 0.6], [1.0, 1.0], [0.3, 0.5], [0.9, 1.1]),
    _point("full", "c", 30, [0.6, 1.2], [0.5, 0.7], [0.6, 0.6], [0.4, 0.8]),
    # Better on the test set than "b" but worse held out: never picked.
    _point("full", "d", 30, [0.3, 0.6], [1.2, 1.2], [0.1, 0.1], [0.1, 0.1]),
    _point("profit", "p", 40, [0.1, 0.2], [3.0, 3.0], [0.1, 0.1], [3.0, 5.0]),
  ]
  rows = reporting.select_frontier(points, base_val, base_test, [1.0, 2.0, 3.0, 10.0])
  picked = [(r["level"], r["full"] and r["full"]["point"]) for r in rows]
  assert picked == [(1.0, None), (2.0, "a"), (3.0, "b"), (10.0, "c")]
  at_three = rows[2]["full"]
  assert at_three["batches"] == 20
  assert at_three["new_error"]["mean"] == pytest.approx(1.0)
  assert at_three["new_error"]["se"] == pytest.approx(0.1)  # std([0.9, 1.1]) / sqrt 2
  assert at_three["old_ratio"]["mean"] == pytest.approx(4.0)  # (3 + 5) / 2
  assert [r["profit"]["point"] for r in rows] == ["p"] * 4
  assert all(r["head"] is None and r["wise_full"] is None for r in rows)


def test_frontier_candidates_respect_the_budget_and_the_batch_size():
  def seed_record(errors, wise=None):
    curve = {"batches": [0, 4, 8, 12], "main_steps": [0, 2, 4, 6]}
    curve.update({k: list(errors) for k in reporting.ERROR_KEYS})
    record = {"curve": curve}
    if wise is not None:
      record["wise"] = {"a": [0.0, 0.5, 1.0], **{k: wise for k in reporting.ERROR_KEYS}}
    return record

  results = {
    "runs": {
      "r16": {
        "method": "full",
        "batch_size": 16,
        "batches": 12,
        "per_seed": [seed_record([1.0, 0.9, 0.8, 0.7], [1.0, 0.85, 0.7])],
      },
      "p16": {
        "method": "profit",
        "batch_size": 16,
        "batches": 8,
        "per_seed": [seed_record([1.0, 0.9, 0.8, 0.7], [1.0, 0.9, 0.8])],
      },
      "r32": {
        "method": "full",
        "batch_size": 32,
        "batches": 12,
        "per_seed": [seed_record([1.0, 0.5, 0.4, 0.3])],
      },
    }
  }
  points = reporting.candidates(results, batch_size=16, budget=8)
  names = sorted(p["point"] for p in points)
  # The start (batches 0) and a = 0 are the base model; r16 ran past the
  # budget, so only its first evaluations count and it has no WiSE points.
  assert names == [
    "p16 @ 4",
    "p16 @ 8",
    "p16 @ 8, a=0.5",
    "p16 @ 8, a=1",
    "r16 @ 4",
    "r16 @ 8",
  ]
  wise = next(p for p in points if p["point"] == "p16 @ 8, a=0.5")
  assert wise["family"] == "wise_profit" and wise["new_val"] == [0.9]


# Command line, end to end.


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("toy")
  results = main.main([*TINY_ARGV, "--workdir", str(workdir)])
  return workdir, results


def test_cli_runs_every_method_and_writes_json_and_figures(tiny_run):
  workdir, returned = tiny_run
  results = json.loads((workdir / "results.json").read_text())
  assert results["seeds"] == [0, 1]
  runs_ = results["runs"]
  expected = {
    # name: (batches consumed, main-optimizer steps)
    "full_lr5e-04_bs16": (8, 8),
    "head_lr5e-04_bs16": (8, 8),
    "profit_lr5e-04_ratio100_cycles_bs16": (16, 8),
    "profit_lr5e-04_ratio100_batches_bs16": (8, 4),
  }
  for bs in (16, 32):
    expected.update(
      {
        f"full_lr1e-03_bs{bs}": (8, 8),
        f"head_lr5e-04_bs{bs}": (8, 8),
        f"l2sp_lr5e-04_alpha1_bs{bs}": (8, 8),
        f"l2sp_lr5e-04_alpha100_bs{bs}": (8, 8),
        f"profit_lr5e-04_ratio10_batches_bs{bs}": (8, 4),
      }
    )
  assert set(runs_) == set(expected)
  for name, (batches, main_steps) in expected.items():
    run = runs_[name]
    assert (run["batches"], run["main_steps"]) == (batches, main_steps), name
    assert len(run["per_seed"]) == 2
    curve = run["mean_curve"]
    assert curve["batches"] == list(range(0, batches + 1, 4))
    assert curve["main_steps"][-1] == main_steps
    for key in reporting.ERROR_KEYS:
      assert all(math.isfinite(v) for v in curve[key])
    assert run["old_error"]["n"] == 2 and run["old_error"]["se"] is not None
    # The mean over seeds is the mean of the per-seed final errors.
    finals = [r["old_error"] for r in run["per_seed"]]
    assert run["old_error"]["mean"] == pytest.approx(np.mean(finals))
    # WiSE-FT for full fine-tuning and PROFIT: a = 0 is the base model, a = 1
    # the run's final weights.
    assert ("mean_wise" in run) == (run["method"] in ("full", "profit")), name
    for record, base in zip(run["per_seed"], results["base_models"], strict=True):
      if "wise" in record:
        assert record["wise"]["a"] == [0.0, 0.25, 0.5, 0.75, 1.0]
        for key in reporting.ERROR_KEYS:
          assert record["wise"][key][0] == base[key]
          assert record["wise"][key][-1] == record[key]
    if run["method"] == "profit":
      d = run["diagnostics"]
      assert 0.0 <= d["projected"] <= 1.0 and 0.0 <= d["removed_fraction"] <= 1.0
      assert -1.0 <= d["cosine"] <= 1.0
      seed_curve = run["per_seed"][0]["diag_curve"]
      assert seed_curve["batches"] == curve["batches"][1:]
  # The frontier: one block per batch size, every family, the budget 8.
  assert set(results["frontier"]) == {"16", "32"}
  for block in results["frontier"].values():
    assert block["budget"] == 8
    assert [r["level"] for r in block["rows"]] == list(
      default.get_config().frontier_levels
    )
    for row in block["rows"]:
      assert set(reporting.FAMILIES) <= set(row)
  assert len(results["diagnostics"]) == 4
  rows = [entry["row"] for entry in results["table"]]
  assert rows == ["baseline", "full", "head", "profit_cycles", "profit_batches"]
  paper = {entry["row"]: entry["paper"] for entry in results["table"]}
  assert paper["baseline"] == {"old_error": 0.0054, "new_error": 1.907}
  assert paper["profit_batches"] == {"old_error": 0.046, "new_error": 0.501}
  for name in (
    "fig3_predictions.png",
    "tradeoff.png",
    "errors_vs_batches.png",
    "diagnostics.png",
  ):
    assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  text = (workdir / "table.md").read_text()
  assert "| PROFIT, 8 cycles = 16 batches" in text and "Batch size 32" in text
  assert returned["table"] == results["table"]


def test_baseline_errors_match_the_cached_checkpoint(tiny_run):
  workdir, results = tiny_run
  config = main.config_from_args(main.build_parser().parse_args(TINY_ARGV))
  for seed, info in zip((0, 1), results["base_models"], strict=True):
    path = runs.base_cache_dir(workdir, config, seed).absolute()
    assert info["path"] == str(path) and not info["loaded_from_cache"]
    target = train.init_params(train.MLP(), jax.random.key(0))
    with ocp.StandardCheckpointer() as checkpointer:
      params = checkpointer.restore(path / "params", target)
    data = input_pipeline.make_datasets(
      seed,
      n_train=512,
      n_test=256,
      n_val=128,
      old_domain=OLD,
      new_domain=NEW,
      noise_std=1.0,
    )
    for split, key in (
      (data.old_test, "old_error"),
      (data.new_test, "new_error"),
      (data.old_val, "old_val"),
      (data.new_val, "new_val"),
    ):
      prediction = _numpy_forward(params["params"], split.x.astype(np.float64))
      mse = np.mean((prediction - split.y) ** 2)
      assert info[key] == pytest.approx(mse, rel=1e-3)


def test_rerun_resumes_finished_runs(tiny_run, monkeypatch, capsys):
  workdir, first = tiny_run

  def fail(*args, **kwargs):
    raise AssertionError("a finished run was trained again")

  monkeypatch.setattr(train, "train_base", fail)
  monkeypatch.setattr(train, "finetune", fail)
  second = main.main([*TINY_ARGV, "--workdir", str(workdir)])
  out = capsys.readouterr().out
  assert out.count("loaded the cached base model") == 2
  assert second["resumed_runs"] == 2 * len(first["runs"])
  assert second["table"] == first["table"]
  assert second["frontier"] == first["frontier"]


def test_rerun_from_the_cached_base_reproduces_every_number(
  tiny_run, tmp_path, monkeypatch
):
  workdir, first = tiny_run
  shutil.copytree(workdir / "base_models", tmp_path / "base_models")

  def fail(*args, **kwargs):
    raise AssertionError("the base model was trained again")

  monkeypatch.setattr(train, "train_base", fail)
  second = main.main([*TINY_ARGV, "--workdir", str(tmp_path)])
  assert second["resumed_runs"] == 0
  assert all(info["loaded_from_cache"] for info in second["base_models"])
  # Same base model, data and batches: every number reproduces exactly.
  assert second["table"] == first["table"]
  for name, run in first["runs"].items():
    assert second["runs"][name]["per_seed"] == run["per_seed"], name


@pytest.mark.parametrize(
  "argv, field",
  [
    (["--set", "batch_size=0"], "batch_size"),
    (["--set", "ratio=-1"], "ratio"),
    (["--set", "seeds=0,0"], "seeds"),
    (["--set", "sweep_lrs=0.1,nan"], "sweep_lrs"),
    (["--set", "l2sp_alphas=-1"], "l2sp_alphas"),
    (["--set", "batch_sizes=8,0"], "batch_sizes"),
    (["--set", "wise_points=1"], "wise_points"),
    (["--set", "step_convention=epochs"], "step_convention"),
    (["--set", "no_such_field=1"], "no_such_field"),
    (["--quick", "--config", "study"], "--quick"),
  ],
)
def test_bad_flags_name_the_argument(argv, field, capsys):
  with pytest.raises(SystemExit):
    main.main(argv)
  assert field in capsys.readouterr().err


@pytest.mark.parametrize("module", [quick, study])
def test_cpu_configs_keep_the_paper_recipe(module):
  config, paper = module.get_config(), default.get_config()
  default.validate(config)
  for field in (
    "n_train",
    "noise_std",
    "old_domain",
    "new_domain",
    "hidden",
    "base_lr",
    "base_decay_rate",
    "ft_steps",
    "ft_lr",
    "ft_decay_every",
    "ft_decay_rate",
    "n_ref",
  ):
    assert getattr(config, field) == getattr(paper, field), field
  assert len(config.seeds) >= 3


def test_study_config_runs_every_family_at_three_batch_sizes():
  config = study.get_config()
  specs = runs.sweep_specs(config)
  assert {s.batch_size for s in specs} == {32, 128, 512}
  for bs in (32, 128, 512):
    methods = [s.method for s in specs if s.batch_size == bs]
    assert methods.count("full") >= 3 and methods.count("head") >= 1
    assert methods.count("l2sp") >= 3 and methods.count("profit") >= 2
  alphas = sorted({s.alpha for s in specs if s.method == "l2sp"})
  assert alphas[-1] / alphas[0] >= 100  # At least two decades.
  # Compute-matched: PROFIT counts batches, every run gets ft_steps of them.
  assert all(runs.num_calls(s, config) * runs.cycle_length(s, config) ==
             config.ft_steps for s in runs.all_specs(config))  # fmt: skip
  assert config.wise_points >= 11


def test_every_swept_setting_gets_its_own_run():
  config = dataclasses.replace(
    default.get_config(),
    sweep_lrs=(2e-4, 2.5e-4),
    sweep_ratios=(10.0, 12.5),
    batch_sizes=(64, 256),
  )
  specs = runs.all_specs(config)
  names = [s.name for s in specs]
  assert len(names) == len(set(names))
  assert {"full_lr2e-04_bs64", "full_lr2.5e-04_bs256"} <= set(names)
  profit = [s for s in specs if s.method == "profit" and s.convention == "batches"]
  # Table's ratio 100 at batch size 256 plus 3 main lrs x 2 ratios x 2 sizes.
  assert len(profit) == 1 + 3 * 2 * 2
  assert len([s for s in specs if s.method == "l2sp"]) == 2 * 3
