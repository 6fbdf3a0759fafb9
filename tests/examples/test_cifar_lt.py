"""Tests of the CIFAR-100-LT held-out-class example (examples/cifar_lt).

The end-to-end run goes through the command line ``main(argv)`` with the
``smoke`` config on ``tfds.testing.mock_data`` (random images, no download).
"""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from hypothesis import given, settings
from hypothesis import strategies as st

import optax_profit
from examples.cifar_lt import configs, frontier, input_pipeline, main, methods
from examples.cifar_lt.configs import default
from examples.common import frontier as common_frontier

# ----------------------------------------------------------------------------
# The long-tail sampler.


@settings(max_examples=200, deadline=None)
@given(
  n_max=st.integers(1, 1000),
  beta=st.floats(1.0, 200.0),
  num_classes=st.integers(2, 200),
)
def test_long_tail_counts_follow_the_exponential_formula(n_max, beta, num_classes):
  counts = input_pipeline.long_tail_counts(n_max, beta, num_classes)
  assert counts.shape == (num_classes,)
  for i, count in enumerate(counts):
    # n_i = n_max * beta^(-i / (C - 1)), truncated; computed here via exp/log.
    exact = n_max * math.exp(-i / (num_classes - 1) * math.log(beta))
    if abs(exact - round(exact)) > 1e-6:  # away from a rounding tie
      assert count == math.floor(exact), (i, exact)
    else:
      assert count in (round(exact) - 1, round(exact))
  assert counts[0] == n_max
  assert np.all(np.diff(counts) <= 0)


def test_long_tail_counts_give_the_published_cifar100_lt_sizes():
  # Training-set sizes of CIFAR-100-LT (500 images per class before the tail)
  # reported by Cao et al. (LDAM, 2019) and used since: 19,573 / 12,608 /
  # 10,847 images at imbalance 10 / 50 / 100.
  for beta, size in ((10, 19573), (50, 12608), (100, 10847)):
    assert input_pipeline.long_tail_counts(500, beta, 100).sum() == size


def test_long_tail_counts_reject_bad_arguments():
  for kwargs, name in (
    ({"n_max": 0, "beta": 2.0, "num_classes": 10}, "n_max"),
    ({"n_max": 5, "beta": 0.5, "num_classes": 10}, "beta"),
    ({"n_max": 5, "beta": 2.0, "num_classes": 1}, "num_classes"),
  ):
    with pytest.raises(ValueError, match=name):
      input_pipeline.long_tail_counts(**kwargs)


def _labelled_split(per_class, num_classes, seed=0):
  """A balanced split whose image pixels encode (label, index within class)."""
  labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
  order = np.random.default_rng(seed).permutation(labels.size)
  labels = labels[order]
  images = np.zeros((labels.size, 32, 32, 3), np.uint8)
  images[:, 0, 0, 0] = labels
  images[:, 0, 0, 1] = np.arange(labels.size) % 256
  images[:, 0, 0, 2] = np.arange(labels.size) // 256
  return input_pipeline.Split(images, labels)


def test_long_tail_subset_has_the_formula_counts_of_distinct_images():
  split = _labelled_split(per_class=30, num_classes=20)
  subset = input_pipeline.long_tail(split, 5.0, seed=3)
  expected = [int(30 * 5.0 ** (-i / 19)) for i in range(20)]
  np.testing.assert_array_equal(np.bincount(subset.labels, minlength=20), expected)
  np.testing.assert_array_equal(subset.images[:, 0, 0, 0], subset.labels)
  ids = subset.images[:, 0, 0, 1].astype(int) + 256 * subset.images[:, 0, 0, 2].astype(
    int
  )
  assert len(set(ids.tolist())) == len(ids)
  with pytest.raises(ValueError, match="n_max"):
    input_pipeline.long_tail(split, 5.0, n_max=31)


def test_batch_stream_crosses_epochs_and_stacks_cycles():
  split = _labelled_split(per_class=5, num_classes=2)  # 10 images
  stream = input_pipeline.batch_stream(split, 4, seed=0, augment=False)
  groups = list(
    x for _, x in zip(range(3), input_pipeline.stacked(stream, 2), strict=False)
  )
  assert [g["label"].shape for g in groups] == [(2, 4)] * 3
  # Epochs of 2 batches (the partial one dropped): every 8 images are 8 of the
  # 10 distinct images, each epoch in its own order.
  first = groups[0]["image"][:, :, 0, 0, 1].ravel()
  second = groups[1]["image"][:, :, 0, 0, 1].ravel()
  assert len(set(first.tolist())) == 8 and len(set(second.tolist())) == 8
  assert not np.array_equal(first, second)


# ----------------------------------------------------------------------------
# The frontier metric.

CURVE = [(0.50, 0.0), (0.46, 0.1), (0.44, 0.3), (0.41, 0.2), (0.38, 0.5), (0.20, 0.9)]


def test_lt_at_threshold_on_a_hand_made_curve():
  assert frontier.lt_at_threshold(CURVE, 0.45) == 0.1
  assert frontier.lt_at_threshold(CURVE, 0.44) == 0.3  # a point on the threshold
  assert frontier.lt_at_threshold(CURVE, 0.40) == 0.3  # not the later 0.2
  assert frontier.lt_at_threshold(CURVE, 0.30) == 0.5
  assert frontier.lt_at_threshold(CURVE, 0.0) == 0.9
  assert frontier.lt_at_threshold(CURVE, 0.6) is None
  # A relative threshold equal to a point's accuracy up to rounding counts.
  (level,) = common_frontier.levels((0.9,), 0.44 / 0.9, relative=True)
  assert frontier.lt_at_threshold(CURVE, level) == 0.3
  assert common_frontier.levels((0.4, 0.3), 0.8, relative=False) == [0.4, 0.3]


def test_pareto_front_of_a_hand_made_curve():
  assert frontier.pareto_front(CURVE) == [
    (0.50, 0.0),
    (0.46, 0.1),
    (0.44, 0.3),
    (0.38, 0.5),
    (0.20, 0.9),
  ]


def _fake_run(method, seed, points, wise=None):
  curve = [{"base_accuracy": b, "lt_accuracy": t} for b, t in points]
  wise = (
    None if wise is None else [{"base_accuracy": b, "lt_accuracy": t} for b, t in wise]
  )
  return {"method": method, "seed": seed, "curve": curve, "wise": wise}


def test_summarize_pools_a_family_and_averages_seeds():
  config = default.Config(thresholds=(0.9, 0.5), relative_thresholds=True, seeds=(0, 1))
  results = [
    # Two learning rates of "full", seed 0: the family is their union.
    _fake_run("full", 0, [(0.5, 0.0), (0.46, 0.2), (0.1, 0.8)], wise=[(0.47, 0.3)]),
    _fake_run("full", 0, [(0.5, 0.0), (0.45, 0.4), (0.3, 0.5)]),
    _fake_run("full", 1, [(0.5, 0.0), (0.45, 0.1), (0.26, 0.7)], wise=[(0.5, 0.0)]),
    _fake_run("head", 0, [(0.5, 0.0), (0.2, 0.6)]),
    _fake_run("head", 1, [(0.5, 0.0), (0.2, 0.6)]),
  ]
  table = frontier.summarize(config, results, pretrained_base=0.5)
  assert table["thresholds"] == pytest.approx([0.45, 0.25])
  full = table["families"]["full, SGD-m"]
  assert full["per_seed"] == [[0.4, 0.5], [0.1, 0.7]]
  assert full["mean"] == pytest.approx([0.25, 0.6])
  assert full["std"] == pytest.approx([0.15, 0.1])
  wise = table["families"]["WiSE-FT of full SGD-m"]
  assert wise["per_seed"] == [[0.3, 0.3], [0.0, 0.0]]
  assert table["families"]["head, SGD-m"]["mean"] == [0.0, 0.0]
  assert "full, L2-SP" not in table["families"]


# ----------------------------------------------------------------------------
# L2-SP, WiSE-FT, head only.


def _tree(seed, scale=1.0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return {
    "backbone": {
      "w": scale * jax.random.normal(keys[0], (3, 4)),
      "b": scale * jax.random.normal(keys[1], (4,)),
    },
    "head": {"w": scale * jax.random.normal(keys[2], (4, 2))},
  }


def test_l2sp_optimizer_penalizes_the_backbone_only():
  anchor, params, grads = _tree(0), _tree(1), _tree(2)
  lr, alpha = 0.1, 0.7
  tx = methods.create_optimizer("l2sp", lr, momentum=0.0, alpha=alpha)
  state = tx.init(anchor)  # the anchor is the params at init
  updates, _ = tx.update(grads, state, params)
  # SGD on loss + alpha / 2 * ||backbone - anchor||^2, by hand:
  expected = {
    "backbone": jax.tree.map(
      lambda g, p, a: -lr * (g + alpha * (p - a)),
      grads["backbone"],
      params["backbone"],
      anchor["backbone"],
    ),
    "head": jax.tree.map(lambda g: -lr * g, grads["head"]),
  }
  chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["head", "head_profit"])
def test_head_only_methods_leave_the_backbone_bit_identical(method):
  def loss_fn(params, batch):
    hidden = jnp.tanh(batch["x"] @ params["backbone"]["w"] + params["backbone"]["b"])
    return jnp.mean((hidden @ params["head"]["w"] - batch["y"]) ** 2)

  params = _tree(0)
  before = jax.tree.map(np.asarray, params)
  tx = methods.create_optimizer(method, 0.1, n_ref=1, ratio=10.0)
  step = optax_profit.make_train_step(loss_fn, tx, cycle_length=2)
  opt_state = tx.init(params)
  key = jax.random.key(5)
  for _ in range(3):
    key, kx, ky = jax.random.split(key, 3)
    batches = {
      "x": jax.random.normal(kx, (2, 8, 3)),
      "y": jax.random.normal(ky, (2, 8, 2)),
    }
    params, opt_state, _ = step(params, opt_state, batches)
  chex.assert_trees_all_equal(params["backbone"], before["backbone"])
  assert not np.array_equal(params["head"]["w"], before["head"]["w"])


def test_profit_method_is_sgd_at_lr_on_the_projected_gradient():
  # One cycle (n_ref = 1) by hand: a reference SGD step at lr / ratio with g1,
  # then the main SGD step at lr with g2 minus its component along g1 (they
  # agree, <g1, g2> > 0), taken from the restored weights.
  lr, ratio = 0.1, 10.0
  tx = methods.create_optimizer("full_profit", lr, momentum=0.0, ratio=ratio)
  params, g1, noise = _tree(0), _tree(1), _tree(2, scale=0.5)
  g2 = jax.tree.map(lambda a, b: a + b, g1, noise)
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
  v1, v2 = flat(g1).astype(np.float64), flat(g2).astype(np.float64)
  assert v1 @ v2 > 0
  projected = v2 - (v1 @ v2) / (v1 @ v1) * v1
  state = tx.init(params)
  updates, state = tx.update(g1, state, params)
  params_ref = optax.apply_updates(params, updates)
  # The reference step lands on the float64 step rounded once (PROFIT's
  # updates differ from -lr/ratio * g1 by that rounding).
  exact = flat(params).astype(np.float64) - lr / ratio * v1
  np.testing.assert_allclose(flat(params_ref), exact, rtol=2.0**-24, atol=0)
  updates, state = tx.update(g2, state, params_ref)
  final = optax.apply_updates(params_ref, updates)
  np.testing.assert_allclose(
    flat(final), flat(params) - lr * projected, rtol=1e-4, atol=1e-6
  )


@pytest.mark.parametrize("method", list(methods.METHODS))
def test_one_compiled_step_serves_every_learning_rate(method):
  # The example compiles one step per method and passes lr (and alpha) in the
  # optimizer state: it must match a step built for that lr.
  def loss_fn(params, batch):
    hidden = jnp.tanh(batch["x"] @ params["backbone"]["w"] + params["backbone"]["b"])
    return jnp.mean((hidden @ params["head"]["w"] - batch["y"]) ** 2)

  keys = jax.random.split(jax.random.key(7), 2)
  batches = {
    "x": jax.random.normal(keys[0], (2, 8, 3)),
    "y": jax.random.normal(keys[1], (2, 8, 2)),
  }
  shared = optax_profit.make_train_step(
    loss_fn, methods.create_optimizer(method, 1.0, alpha=1.0), cycle_length=2
  )
  for lr, alpha in ((0.01, 0.1), (0.3, 3.0)):
    tx = methods.create_optimizer(method, lr, alpha=alpha)
    own = optax_profit.make_train_step(loss_fn, tx, cycle_length=2)
    anchor = _tree(0)
    start = jax.tree.map(lambda x: x + 0.1, anchor)
    out = []
    for step in (shared, own):
      params = jax.tree.map(jnp.copy, start)
      state = tx.init(anchor)  # L2-SP's anchor differs from the start
      for _ in range(2):
        params, state, _ = step(params, state, batches)
      out.append(params)
    chex.assert_trees_all_close(out[0], out[1], rtol=1e-6, atol=1e-7)
    assert not np.allclose(out[0]["head"]["w"], start["head"]["w"])


# ----------------------------------------------------------------------------
# End to end, through the command line.


@pytest.fixture
def mock_cifar100():
  """Mock CIFAR-100 (random images and labels), fresh split cache."""
  input_pipeline.clear_cache()
  with tfds.testing.mock_data(num_examples=2000):
    yield
  input_pipeline.clear_cache()


def test_smoke_run_through_the_cli_writes_its_json(
  mock_cifar100, tmp_path, monkeypatch
):
  seen = []  # (batch size, labels) of every training batch either stage builds
  original = input_pipeline.train_dataset

  def recording(split, batch_size, **kwargs):
    ds = original(split, batch_size, **kwargs)
    return ds.map(lambda b: seen.append((batch_size, b["label"].copy())) or b)

  monkeypatch.setattr(input_pipeline, "train_dataset", recording)
  workdir = tmp_path / "lt"
  results = main.main(["--config", "smoke", "--workdir", str(workdir), "--no-progress"])
  config = configs.get_config("smoke")
  stage1 = [labels for size, labels in seen if size == config.pretrain_batch_size]
  stage2 = [labels for size, labels in seen if size == config.batch_size]
  assert stage1 and stage2
  held_out = 100 - config.held_out_classes
  assert max(int(labels.max()) for labels in stage1) < held_out
  assert min(int(labels.min()) for labels in stage2) >= held_out

  saved = json.loads((workdir / "results.json").read_text())
  entry = saved["betas"]["10"]
  counts = input_pipeline.long_tail_counts(config.n_max, 10.0, 100)
  np.testing.assert_array_equal(entry["counts"], counts)
  assert entry["sizes"]["held_out_train"] == counts[held_out:].sum()
  points = len(config.eval_points) + 1
  for run in entry["runs"]:
    assert [p["batches_seen"] for p in run["curve"]] == [0, *config.eval_points]
    assert len(run["curve"]) == points
    profit = run["method"].endswith("profit")
    assert run["main_steps"] == config.budget_batches // (2 if profit else 1)
    if run["method"] in ("full", "full_profit"):
      assert [p["a"] for p in run["wise"]] == [0.0, 0.5, 1.0]
  # The table's value of a family, read by hand from its runs' curves.
  levels = [t * entry["stage1"]["base_accuracy"] for t in config.thresholds]
  full = [p for r in entry["runs"] if r["method"] == "full" for p in r["curve"]]
  for level, value in zip(
    levels, entry["table"]["families"]["full, SGD-m"]["mean"], strict=True
  ):
    assert value == max(
      p["lt_accuracy"] for p in full if p["base_accuracy"] >= level - 1e-9
    )
  assert (workdir / "tradeoff_beta10.png").stat().st_size > 0
  assert "GOODFIT" in (workdir / "table.md").read_text()

  # Run again: stage 1 and every stage 2 run are loaded, not recomputed.
  seen.clear()
  again = main.main(["--config", "smoke", "--workdir", str(workdir), "--no-progress"])
  assert not seen
  assert again["betas"]["10"]["table"] == results["betas"]["10"]["table"]


def test_cli_rejects_bad_values_naming_the_field(capsys):
  with pytest.raises(SystemExit):
    main.main(["--config", "smoke", "--set", "budget_batches=7"])
  assert "budget_batches" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    main.main(["--config", "smoke", "--set", "no_such_field=1"])
  assert "no_such_field" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    main.main(["--config", "smoke", "--set", "main_optimizer=lion"])
  assert "main_optimizer" in capsys.readouterr().err
