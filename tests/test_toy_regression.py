"""Tests of the toy 2-D regression example (examples/toy_regression)."""

import dataclasses
import json
import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from examples.toy_regression import input_pipeline, main, models, train
from examples.toy_regression.configs import default, quick

OLD, NEW = (-1.0, 1.0), (0.8, 1.5)

# A tiny but complete run of every method: 2 seeds, full / head / PROFIT in
# both step conventions, a sweep of one extra lr and one extra ratio.
TINY_ARGV = [
  "--seeds", "0", "1",
  "--base-steps", "30",
  "--ft-steps", "8",
  "--batch-size", "16",
  "--n-train", "512",
  "--n-test", "256",
  "--eval-every", "4",
  "--lrs", "1e-3",
  "--ratios", "10",
  "--profit-lrs", "5e-4",
  "--plot-grid", "21",
]  # fmt: skip


def _datasets(seed: int = 0, n_train: int = 20_000, n_test: int = 4_000):
  return input_pipeline.make_datasets(
    seed,
    n_train=n_train,
    n_test=n_test,
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


@pytest.mark.parametrize("split", ["old_train", "old_test", "new_train", "new_test"])
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
  for split in (data.old_test, data.new_test):
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
  # The four splits are drawn independently of each other.
  assert not np.array_equal(a.old_test.x[:50], a.old_train.x[:50])


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
  params = models.init_params(models.MLP(), jax.random.key(0))["params"]
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
  model = models.MLP()
  variables = models.init_params(model, jax.random.key(1))
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


def _finetune_params(method: str, steps: int = 5, **overrides):
  config = dataclasses.replace(
    default.get_config(), n_train=256, n_test=64, batch_size=32, eval_every=1
  )
  spec = train.RunSpec(method, 1e-3, 10.0 if method == "profit" else None, "cycles")
  model = models.MLP()
  base = models.init_params(model, jax.random.key(3))
  data = input_pipeline.make_datasets(
    3, n_train=256, n_test=64, old_domain=OLD, new_domain=NEW, noise_std=1.0
  )
  chunk = train._finetune_chunk_fn(model, config, *train.compile_key(spec))
  config = dataclasses.replace(config, ft_steps=steps, **overrides)
  params, record = train.finetune(
    spec, chunk, train.make_eval_fn(model), base, data, config, seed=0
  )
  return base, params, record


def test_head_only_leaves_the_other_layers_bit_identical():
  base, tuned, record = _finetune_params("head")
  assert record["batches"] == 5
  for layer in models.LAYERS:
    before, after = base["params"][layer], tuned["params"][layer]
    if layer == models.HEAD:
      for leaf_before, leaf_after in zip(
        jax.tree.leaves(before), jax.tree.leaves(after), strict=True
      ):
        assert not np.array_equal(leaf_before, leaf_after)
    else:
      chex.assert_trees_all_equal(_bits(before), _bits(after))


def test_full_fine_tuning_moves_every_layer():
  base, tuned, _ = _finetune_params("full")
  for layer in models.LAYERS:
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
    spec = train.RunSpec("profit", 5e-4, 100.0, convention)
    tx = train.finetune_optimizer(spec, config)
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = {"w": jnp.array([0.5, 0.25, -4.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -5e-6 * grads["w"], rtol=1e-6)


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
  same = train.base_cache_dir(workdir, config, 0)
  assert train.base_cache_dir(workdir, config, 1) != same
  changed = dataclasses.replace(config, base_steps=10)
  assert train.base_cache_dir(workdir, changed, 0) != same
  # Fine-tuning settings do not invalidate the base model.
  ft_only = dataclasses.replace(config, ft_lr=1.0, sweep_ratios=(3.0,))
  assert train.base_cache_dir(workdir, ft_only, 0) == same


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
  runs = results["runs"]
  expected = {
    # name: (batches consumed, main-optimizer steps)
    "full_lr5e-04": (8, 8),
    "full_lr1e-03": (8, 8),
    "head_lr5e-04": (8, 8),
    "profit_lr5e-04_ratio100_cycles": (16, 8),
    "profit_lr5e-04_ratio100_batches": (8, 4),
    "profit_lr5e-04_ratio10_cycles": (16, 8),
  }
  assert set(runs) == set(expected)
  for name, (batches, main_steps) in expected.items():
    run = runs[name]
    assert (run["batches"], run["main_steps"]) == (batches, main_steps), name
    assert len(run["per_seed"]) == 2
    curve = run["mean_curve"]
    assert curve["batches"] == list(range(0, batches + 1, 4))
    assert curve["main_steps"][-1] == main_steps
    assert all(math.isfinite(v) for v in curve["old_error"] + curve["new_error"])
    assert run["old_error"]["n"] == 2 and run["old_error"]["se"] is not None
    # The mean over seeds is the mean of the per-seed final errors.
    finals = [r["old_error"] for r in run["per_seed"]]
    assert run["old_error"]["mean"] == pytest.approx(np.mean(finals))
    if name.startswith("profit"):
      assert 0.0 <= run["projected_fraction"] <= 1.0
  rows = [entry["row"] for entry in results["table"]]
  assert rows == ["baseline", "full", "head", "profit_cycles", "profit_batches"]
  paper = {entry["row"]: entry["paper"] for entry in results["table"]}
  assert paper["baseline"] == {"old_error": 0.0054, "new_error": 1.907}
  assert paper["profit_batches"] == {"old_error": 0.046, "new_error": 0.501}
  for name in ("fig3_predictions.png", "tradeoff.png", "errors_vs_batches.png"):
    assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "| PROFIT, 8 cycles = 16 batches" in (workdir / "table.md").read_text()
  assert returned["table"] == results["table"]


def test_baseline_errors_match_the_cached_checkpoint(tiny_run):
  workdir, results = tiny_run
  config = main.config_from_args(main.build_parser().parse_args(TINY_ARGV))
  for seed, info in zip((0, 1), results["base_models"], strict=True):
    path = train.base_cache_dir(workdir, config, seed).absolute()
    assert info["path"] == str(path) and not info["loaded_from_cache"]
    target = models.init_params(models.MLP(), jax.random.key(0))
    with ocp.StandardCheckpointer() as checkpointer:
      params = checkpointer.restore(path / "params", target)
    data = input_pipeline.make_datasets(
      seed, n_train=512, n_test=256, old_domain=OLD, new_domain=NEW, noise_std=1.0
    )
    for split, key in ((data.old_test, "old_error"), (data.new_test, "new_error")):
      prediction = _numpy_forward(params["params"], split.x.astype(np.float64))
      mse = np.mean((prediction - split.y) ** 2)
      assert info[key] == pytest.approx(mse, rel=1e-3)


def test_rerun_loads_the_cached_base_model(tiny_run, monkeypatch, capsys):
  workdir, first = tiny_run

  def fail(*args, **kwargs):
    raise AssertionError("the base model was trained again")

  monkeypatch.setattr(train, "train_base", fail)
  second = main.main([*TINY_ARGV, "--workdir", str(workdir)])
  assert capsys.readouterr().out.count("loaded the cached base model") == 2
  assert all(info["loaded_from_cache"] for info in second["base_models"])
  # Same base model, data and batches: every number reproduces exactly.
  assert second["table"] == first["table"]
  for name, run in first["runs"].items():
    assert second["runs"][name]["per_seed"] == run["per_seed"], name


@pytest.mark.parametrize(
  "argv, flag",
  [
    (["--batch-size", "0"], "--batch-size"),
    (["--ratio", "-1"], "--ratio"),
    (["--seeds", "0", "0"], "--seeds"),
    (["--lrs", "0.1", "nan"], "--lrs"),
    (["--step-convention", "epochs"], "--step-convention"),
  ],
)
def test_bad_flags_name_the_argument(argv, flag, capsys):
  with pytest.raises(SystemExit):
    main.main(argv)
  assert flag in capsys.readouterr().err


def test_quick_config_keeps_the_paper_recipe():
  config, paper = quick.get_config(), default.get_config()
  train.validate_config(config)
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


def test_every_swept_setting_gets_its_own_run():
  config = dataclasses.replace(
    default.get_config(), sweep_lrs=(2e-4, 2.5e-4), sweep_ratios=(10.0, 12.5)
  )
  specs = train.all_specs(config)
  names = [s.name for s in specs]
  assert len(names) == len(set(names))
  assert {"full_lr2e-04", "full_lr2.5e-04"} <= set(names)
  profit = [s for s in specs if s.method == "profit" and s.convention == "cycles"]
  # Table's ratio 100 plus 3 main lrs x 2 ratios.
  assert len(profit) == 1 + 3 * 2
