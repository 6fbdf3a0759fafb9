"""Properties of the PROFIT projection (hypothesis)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optax_profit import _projection, _xla_cpu, project_conflicting


def signed(low, high):
  magnitude = st.floats(low, high, allow_nan=False, allow_infinity=False)
  return st.one_of(st.just(0.0), magnitude, magnitude.map(lambda x: -x))


# Gradients in [1e-100, 1e3]; displacements down to 1e-200, whose squares
# underflow float64 unless the library rescales delta first. Products g * d
# stay above 1e-300, so the test's own omega is meaningful.
GRAD, DELTA = signed(1e-100, 1e3), signed(1e-200, 1e3)


@st.composite
def gradient_and_delta(draw):
  """Two pytrees of two leaves each (shapes (n,) and (m, 2)), float64."""
  n = draw(st.integers(1, 6))
  m = draw(st.integers(1, 4))
  leaf = lambda shape, e: draw(hnp.arrays(np.float64, shape, elements=e))
  g = {"a": leaf((n,), GRAD), "b": leaf((m, 2), GRAD)}
  d = {"a": leaf((n,), DELTA), "b": leaf((m, 2), DELTA)}
  return g, d


def flat(tree):
  return np.concatenate([np.ravel(tree[k]) for k in sorted(tree)])


@pytest.fixture(autouse=True, params=["one pass", "plain sums"])
def _x64(request, monkeypatch):
  """float64 by default; the reductions of both platforms' lowerings.

  On CPU ``project_conflicting`` sums in one variadic reduction (rescaled
  in a second pass only when needed); GPU/TPU lower maxima, then plain sums
  of the rescaled terms. Both are run here, on CPU.
  """
  if request.param == "plain sums":
    monkeypatch.setattr(_xla_cpu, "projection_sums", _projection._default_sums)
  with jax.enable_x64(True):
    yield


@settings(max_examples=300, deadline=None)
@given(gradient_and_delta())
def test_projection_properties(gd):
  g, d = gd
  g64, d64 = flat(g), flat(d)
  omega = float(g64 @ d64)  # independent NumPy computation
  out = project_conflicting(jax.tree.map(jnp.asarray, g), jax.tree.map(jnp.asarray, d))
  new = flat(jax.tree.map(np.asarray, out.updates))
  np.testing.assert_allclose(float(out.omega), omega, rtol=1e-12, atol=1e-9)
  # The rule in scale-free terms: delta normalized by its largest entry.
  d_max = np.max(np.abs(d64))
  unit = d64 / d_max if d_max else d64
  g_norm = np.linalg.norm(g64)
  scale = g_norm * np.linalg.norm(unit) + 1e-300
  omega_unit = float(g64 @ unit)
  if abs(omega_unit) <= 1e-12 * scale:
    # The sign of a (numerically) zero omega is summation-order noise: the
    # rule is then judged on the library's own omega, checked close above
    # (divided by d_max: omega_unit is in units of `unit = delta / d_max`).
    omega_unit = float(out.omega) / d_max if d_max else float(out.omega)
  fires = omega_unit < 0 and d_max > 0
  assert bool(out.projected) == fires
  np.testing.assert_allclose(
    float(out.delta_norm), d_max * np.linalg.norm(unit), rtol=1e-12
  )
  if fires:
    # Orthogonal to delta after projection.
    assert abs(new @ unit) <= 1e-9 * scale
    # Equal to g minus its component along delta.
    expected = g64 - (omega_unit / (unit @ unit)) * unit
    np.testing.assert_allclose(new, expected, rtol=1e-9, atol=1e-9 * g_norm)
  else:
    # Untouched, bit for bit.
    np.testing.assert_array_equal(new, g64)
  # Never longer than g.
  assert np.linalg.norm(new) <= g_norm * (1 + 1e-12) + 1e-300
  # The diagnostics, from the same NumPy quantities.
  cosine = omega_unit / scale if g_norm and d_max else 0.0
  np.testing.assert_allclose(float(out.cosine), cosine, rtol=1e-9, atol=1e-12)
  removed = np.linalg.norm(g64 - new) / g_norm if g_norm else 0.0
  np.testing.assert_allclose(float(out.removed_fraction), removed, rtol=1e-7, atol=1e-9)


def test_omega_is_global_not_per_leaf():
  # Leaf "a" conflicts (negative dot), leaf "b" agrees more: globally no
  # conflict, so nothing is projected, although a per-leaf rule would fire.
  g = {"a": jnp.array([1.0]), "b": jnp.array([3.0])}
  d = {"a": jnp.array([-1.0]), "b": jnp.array([1.0])}
  out = project_conflicting(g, d)
  assert float(out.omega) == 2.0 and not bool(out.projected)
  np.testing.assert_array_equal(out.updates["a"], g["a"])


def test_zero_delta_gives_no_nan():
  g = {"a": jnp.array([1.0, -2.0])}
  out = project_conflicting(g, {"a": jnp.zeros(2)})
  assert not bool(out.projected)
  np.testing.assert_array_equal(out.updates["a"], g["a"])


def test_bfloat16_accumulates_in_float32():
  # 4096 products of 1 * 1/512 sum to 8: exact in float32; a bfloat16
  # accumulator stalls at 0.5 (adding 1/512 to 0.5 rounds to 0.5).
  n = 4096
  g = {"a": jnp.full((n,), 1.0, jnp.bfloat16)}
  d = {"a": jnp.full((n,), -1.0 / 512, jnp.bfloat16)}
  out = project_conflicting(g, d)
  assert out.omega.dtype == jnp.float32
  assert float(out.omega) == -8.0
  assert out.updates["a"].dtype == jnp.bfloat16


def test_tiny_delta_does_not_underflow_in_float32():
  """ref=1e-20 on float32: ||delta||^2 ~ 1e-40 underflows unless rescaled."""
  g = {"a": jnp.array([1.0, 2.0, -0.5], jnp.float32)}
  d = jax.tree.map(lambda x: jnp.float32(-1e-20) * x, g)
  with jax.enable_x64(False):
    out = project_conflicting(g, d)
  assert bool(out.projected)
  assert out.omega.dtype == jnp.float32 and float(out.omega) < 0
  np.testing.assert_allclose(float(out.delta_norm), 1e-20 * np.sqrt(5.25), rtol=1e-6)
  # g is parallel to delta: the projection removes all of it.
  np.testing.assert_allclose(np.asarray(out.updates["a"]), 0.0, atol=1e-6)
  np.testing.assert_allclose(float(out.removed_fraction), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(out.cosine), -1.0, rtol=1e-6)


def test_huge_delta_does_not_overflow_in_float32():
  g = {"a": jnp.array([1.0, 0.0], jnp.float32)}
  d = {"a": jnp.array([-3e30, 4e30], jnp.float32)}
  with jax.enable_x64(False):
    out = project_conflicting(g, d)
  np.testing.assert_allclose(float(out.delta_norm), 5e30, rtol=1e-6)
  # g - (<g,d>/|d|^2) d = (1, 0) - (-3/25) (-3, 4) = (0.64, 0.48)
  np.testing.assert_allclose(np.asarray(out.updates["a"]), [0.64, 0.48], rtol=1e-6)
  np.testing.assert_allclose(float(out.cosine), -0.6, rtol=1e-6)
  np.testing.assert_allclose(float(out.removed_fraction), 0.6, rtol=1e-6)


@pytest.mark.parametrize(
  "magnitude", [1e-35, 1e-25, 1e-10, 1e-3, 1.0, 1e18, 1e25, 1e36]
)
def test_float32_norms_at_every_magnitude(magnitude):
  """float32 delta from near the smallest normal to near overflow.

  Each magnitude lands in one of the three scalings of ||delta||^2 (scaled
  up by 2**71, unscaled, scaled down); all must agree with float64 NumPy.
  (XLA flushes subnormals to zero, so the reference does too.)
  """
  rng = np.random.default_rng(0)
  g64 = rng.normal(size=64)
  d64 = np.float32(magnitude) * rng.normal(size=64).astype(np.float32)
  d64 = d64.astype(np.float64) - 0.05 * magnitude * g64.astype(np.float32)
  g = {"a": jnp.asarray(g64[:40], jnp.float32), "b": jnp.asarray(g64[40:], jnp.float32)}
  d32 = d64.astype(np.float32)
  d = {"a": jnp.asarray(d32[:40]), "b": jnp.asarray(d32[40:])}
  with jax.enable_x64(False):
    out = project_conflicting(g, d)
  g_ref, d_ref = g64.astype(np.float32).astype(np.float64), d32.astype(np.float64)
  d_ref[np.abs(d_ref) < np.finfo(np.float32).tiny] = 0.0
  omega = g_ref @ d_ref
  assert bool(out.projected) == (omega < 0)
  np.testing.assert_allclose(float(out.delta_norm), np.linalg.norm(d_ref), rtol=2e-6)
  cosine = omega / (np.linalg.norm(d_ref) * np.linalg.norm(g_ref))
  np.testing.assert_allclose(float(out.cosine), cosine, rtol=1e-4, atol=1e-6)
  expected = g_ref - min(omega, 0) / (d_ref @ d_ref) * d_ref if omega < 0 else g_ref
  new = np.concatenate([np.asarray(out.updates[k]) for k in ("a", "b")])
  np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-5)
