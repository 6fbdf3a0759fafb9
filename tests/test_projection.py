"""Properties of the PROFIT projection (hypothesis)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optax_profit import project_conflicting

# Zero or of magnitude in [1e-100, 1e3]: squares stay clear of float64
# underflow, so the test's own norms are meaningful.
magnitude = st.floats(1e-100, 1e3, allow_nan=False, allow_infinity=False)
finite = st.one_of(st.just(0.0), magnitude, magnitude.map(lambda x: -x))


@st.composite
def gradient_and_delta(draw):
  """Two pytrees of two leaves each (shapes (n,) and (m, 2)), float64."""
  n = draw(st.integers(1, 6))
  m = draw(st.integers(1, 4))
  leaf = lambda shape: draw(hnp.arrays(np.float64, shape, elements=finite))
  g = {"a": leaf((n,)), "b": leaf((m, 2))}
  d = {"a": leaf((n,)), "b": leaf((m, 2))}
  return g, d


def flat(tree):
  return np.concatenate([np.ravel(tree[k]) for k in sorted(tree)])


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


@settings(max_examples=300, deadline=None)
@given(gradient_and_delta())
def test_projection_properties(gd):
  g, d = gd
  g64, d64 = flat(g), flat(d)
  omega = float(g64 @ d64)  # independent NumPy computation
  out = project_conflicting(
      jax.tree.map(jnp.asarray, g), jax.tree.map(jnp.asarray, d)
  )
  new = flat(jax.tree.map(np.asarray, out.updates))
  np.testing.assert_allclose(float(out.omega), omega, rtol=1e-12, atol=1e-9)
  scale = np.linalg.norm(g64) * np.linalg.norm(d64) + 1e-300
  if abs(omega) <= 1e-12 * scale:
    # The sign of a (numerically) zero omega is summation-order noise: the
    # rule is then judged on the library's own omega, checked close above.
    omega = float(out.omega)
  fires = omega < 0 and float(d64 @ d64) > 0
  assert bool(out.projected) == fires
  if fires:
    # Orthogonal to delta after projection.
    assert abs(new @ d64) <= 1e-9 * scale
    # Equal to g minus its component along delta.
    expected = g64 - (omega / (d64 @ d64)) * d64
    np.testing.assert_allclose(new, expected, rtol=1e-9, atol=1e-9 * scale)
  else:
    # Untouched, bit for bit.
    np.testing.assert_array_equal(new, g64)
  # Never longer than g.
  assert np.linalg.norm(new) <= np.linalg.norm(g64) * (1 + 1e-12) + 1e-300


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
