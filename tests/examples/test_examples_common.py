"""The shared example kit (``examples/common``) against hand computations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from examples.common import baselines, frontier


def _tree(seed, scale=1.0):
  rng = np.random.default_rng(seed)
  return {
    "backbone": {
      "conv": {
        "kernel": jnp.asarray(scale * rng.normal(size=(3, 3, 2, 4)), jnp.float32)
      },
      "norm": {"scale": jnp.asarray(rng.normal(size=(4,)), jnp.float32)},
    },
    "head": {
      "Dense_0": {
        "kernel": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=(5,)), jnp.float32),
      }
    },
  }


def _bits(tree):
  return jax.tree.map(lambda x: np.asarray(x).view(np.uint32), tree)


def _f64(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


# ----------------------------------------------------------------------------
# L2-SP.


@pytest.mark.parametrize("alpha", [0.37, 3.5])
def test_l2sp_penalty_and_gradient_match_a_float64_computation(alpha):
  anchor, params = _tree(0), _tree(1)
  # By hand: alpha / 2 * the sum of squared differences, in float64 NumPy;
  # its gradient is alpha * (theta - theta_pre).
  diffs = jax.tree.map(np.subtract, _f64(params), _f64(anchor))
  expected = 0.5 * alpha * sum(np.sum(d * d) for d in jax.tree.leaves(diffs))
  penalty = baselines.l2sp_penalty(params, anchor, alpha)
  np.testing.assert_allclose(float(penalty), expected, rtol=1e-6)
  grad = jax.grad(baselines.l2sp_penalty)(params, anchor, alpha)
  chex.assert_trees_all_close(
    _f64(grad), jax.tree.map(lambda d: alpha * d, diffs), rtol=1e-5, atol=1e-6
  )
  # A traced strength gives the same penalty.
  traced = jax.jit(baselines.l2sp_penalty)(params, anchor, jnp.float32(alpha))
  np.testing.assert_allclose(float(traced), expected, rtol=1e-6)


def test_l2sp_transformation_pulls_the_backbone_towards_its_init():
  anchor, params, grads = _tree(0), _tree(1), _tree(2)
  alpha = 0.37
  diffs = jax.tree.map(np.subtract, _f64(params), _f64(anchor))
  tx = baselines.l2sp(alpha, "backbone")
  state = tx.init(anchor)  # the anchor is the params at init
  updates, _ = jax.jit(tx.update)(grads, state, params)
  # The head gets the loss gradient unchanged (it has no pre-trained value).
  chex.assert_trees_all_equal(updates["head"], grads["head"])
  chex.assert_trees_all_close(
    _f64(updates["backbone"]),
    jax.tree.map(
      lambda g, d: np.asarray(g, np.float64) + alpha * d,
      grads["backbone"],
      diffs["backbone"],
    ),
    rtol=1e-5,
    atol=1e-6,
  )

  # And it is the gradient of loss + penalty, as autodiff of the direct formula.
  def penalized(p):
    linear = sum(
      jnp.sum(g * x)
      for g, x in zip(jax.tree.leaves(grads), jax.tree.leaves(p), strict=True)
    )
    squares = sum(
      jnp.sum((x - a) ** 2)
      for x, a in zip(
        jax.tree.leaves(p["backbone"]), jax.tree.leaves(anchor["backbone"]), strict=True
      )
    )
    return linear + 0.5 * alpha * squares

  chex.assert_trees_all_close(
    updates, jax.grad(penalized)(params), rtol=1e-5, atol=1e-6
  )

  # Without a key every parameter is anchored; alpha lives in the state, so an
  # update compiled for one strength serves another.
  everything = baselines.l2sp(alpha)
  update = jax.jit(everything.update)
  for strength in (alpha, 2.0):
    state = baselines.l2sp(strength).init(anchor)
    updates, _ = update(grads, state, params)
    chex.assert_trees_all_close(
      _f64(updates),
      jax.tree.map(
        lambda g, d, s=strength: np.asarray(g, np.float64) + s * d, grads, diffs
      ),
      rtol=1e-5,
      atol=1e-6,
    )


def test_l2sp_rejects_negative_alpha_and_a_missing_params():
  with pytest.raises(ValueError, match="`alpha`"):
    baselines.l2sp(-1.0)
  tx = baselines.l2sp(1.0)
  with pytest.raises(ValueError, match="`params`"):
    tx.update(_tree(0), tx.init(_tree(0)))


# ----------------------------------------------------------------------------
# LP-FT.


def _head_labels(params):
  return {
    "backbone": jax.tree.map(lambda _: "frozen", params["backbone"]),
    "head": jax.tree.map(lambda _: "trainable", params["head"]),
  }


def test_switch_runs_the_head_first_then_a_fresh_optimizer():
  params, grads = _tree(0), _tree(1)
  probe = optax.multi_transform(
    {"trainable": optax.sgd(0.5), "frozen": optax.set_to_zero()}, _head_labels
  )
  tx = baselines.switch(probe, optax.adam(0.1), steps=2)
  state = tx.init(params)
  update = jax.jit(tx.update)
  fresh_adam = optax.adam(0.1)
  for i in range(4):
    updates, state = update(grads, state, params)
    if i < 2:  # LP: SGD on the head only
      assert all(not np.any(u) for u in jax.tree.leaves(updates["backbone"]))
      chex.assert_trees_all_close(
        updates["head"], jax.tree.map(lambda g: -0.5 * g, grads["head"])
      )
    elif i == 2:  # FT: Adam's very first step (its state untouched so far)
      expected, _ = fresh_adam.update(grads, fresh_adam.init(params), params)
      chex.assert_trees_all_close(updates, expected, rtol=1e-6)
  with pytest.raises(ValueError, match="`steps`"):
    baselines.switch(probe, probe, -1)


# ----------------------------------------------------------------------------
# WiSE-FT.


def test_wise_ft_end_points_are_bit_identical_and_the_middle_interpolates():
  pretrained, finetuned = _tree(0), _tree(1, scale=3.0)
  # Negative zeros: `(1 - a) * p + a * f` would turn them into +0.0.
  pretrained["backbone"]["norm"]["scale"] = (
    pretrained["backbone"]["norm"]["scale"].at[0].set(-0.0)
  )
  finetuned["head"]["Dense_0"]["bias"] = (
    finetuned["head"]["Dense_0"]["bias"].at[1].set(-0.0)
  )
  chex.assert_trees_all_equal(
    _bits(baselines.interpolate(pretrained, finetuned, 0.0)), _bits(pretrained)
  )
  chex.assert_trees_all_equal(
    _bits(baselines.interpolate(pretrained, finetuned, 1.0)), _bits(finetuned)
  )
  for a in (0.25, 0.3, np.float64(0.7)):
    middle = baselines.interpolate(pretrained, finetuned, a)
    expected = jax.tree.map(
      lambda p, f, a=a: (1 - a) * p + a * f, _f64(pretrained), _f64(finetuned)
    )
    chex.assert_trees_all_close(_f64(middle), expected, rtol=1e-6, atol=1e-6)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(middle))
  # Leaves keep their dtype (computed in float32).
  half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), pretrained)
  mixed = baselines.interpolate(half, jax.tree.map(jnp.zeros_like, half), 0.5)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(mixed))
  with pytest.raises(ValueError, match="`a`"):
    baselines.interpolate(pretrained, finetuned, 1.5)
  with pytest.raises(ValueError, match="`a`"):
    baselines.interpolate(pretrained, finetuned, -0.1)


# ----------------------------------------------------------------------------
# The frontier's selection rule.


def _sel(points, level, **kw):
  return frontier.select(
    points, level, old=lambda p: p[0], new=lambda p: p[1], batches=lambda p: p[2], **kw
  )


# (old-task score, new-task score, batches) along a run: the old task falls
# as the new one rises, then the new one overfits.
CURVE = [
  (0.50, 0.00, 0),
  (0.46, 0.10, 10),
  (0.44, 0.30, 20),
  (0.41, 0.20, 30),
  (0.38, 0.50, 40),
  (0.20, 0.90, 50),
]


def test_select_takes_the_best_new_score_among_points_keeping_the_level():
  # By hand: the points with old >= level, then the largest new.
  assert _sel(CURVE, 0.45)[2] == 10
  assert _sel(CURVE, 0.44)[2] == 20  # a point on the level keeps it
  assert _sel(CURVE, 0.40)[2] == 20  # not the later, worse 30
  assert _sel(CURVE, 0.30)[2] == 40
  assert _sel(CURVE, 0.0)[2] == 50
  assert _sel(CURVE, 0.6) is None
  assert _sel([], 0.0) is None
  # A level computed as a product equals a point's score up to rounding: kept.
  level = 0.9 * (0.44 / 0.9)
  assert _sel(CURVE, level)[2] == 20
  assert _sel(CURVE, 0.44 + 1e-6)[2] == 10  # beyond the tolerance: not kept


def test_select_breaks_ties_by_old_score_then_batches_then_order():
  assert _sel([(0.45, 0.1, 5), (0.47, 0.1, 9)], 0.4)[2] == 9  # higher old score
  assert _sel([(0.45, 0.1, 9), (0.45, 0.1, 5)], 0.4)[2] == 5  # fewer batches
  first, second = (0.45, 0.1, 5), (0.45, 0.1, 5)
  assert _sel([first, second], 0.4) is first  # then the earlier point
  # Without a batches key the earlier of two otherwise equal points wins.
  picked = frontier.select(
    [(0.45, 0.1, 9), (0.45, 0.1, 5)], 0.4, old=lambda p: p[0], new=lambda p: p[1]
  )
  assert picked[2] == 9


def test_select_on_negated_errors_is_the_lowest_error_within_a_ratio():
  # Errors (lower is better): (old-error ratio, new error, batches).
  points = [(1.5, 2.0, 10), (3.0, 1.0, 20), (6.0, 0.5, 30), (3.0, 1.2, 30)]
  pick = lambda level: frontier.select(
    points, -level, old=lambda p: -p[0], new=lambda p: -p[1], batches=lambda p: p[2]
  )
  assert pick(1.0) is None
  assert [pick(level)[2] for level in (2.0, 3.0, 10.0)] == [10, 20, 30]


def test_pareto_keeps_the_non_dominated_points_by_falling_old_score():
  front = frontier.pareto(CURVE, x=lambda p: p[0], y=lambda p: p[1])
  assert [p[2] for p in front] == [0, 10, 20, 40, 50]
  # Equal points: the first only; a dominated duplicate x: dropped.
  twins = [(0.5, 0.1, 1), (0.5, 0.1, 2), (0.5, 0.0, 3)]
  assert frontier.pareto(twins, x=lambda p: p[0], y=lambda p: p[1]) == [twins[0]]


def test_levels_are_fractions_of_the_base_or_absolute():
  assert frontier.levels((0.9, 0.5), 0.5) == pytest.approx([0.45, 0.25])
  assert frontier.levels((0.4, 0.3), 0.8, relative=False) == [0.4, 0.3]
