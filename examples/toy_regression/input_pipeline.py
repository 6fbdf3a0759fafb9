"""Data of the toy example: f(x) = sin(10 |x|) on the plane.

The *original* data have both coordinates ~ U[-1, 1]; the *new* data ~
U[0.8, 1.5]. Training targets get N(0, noise_std^2) noise; test targets are
noise-free (paper, Sec. 4.1 and Appendix C.1). Held-out validation sets,
drawn like the test sets but independently of them, are where the frontier
selects its points. Everything is drawn from NumPy generators seeded by the
run's seed, so a seed fixes the data.
"""

from typing import NamedTuple

import numpy as np


def target_fn(x: np.ndarray) -> np.ndarray:
  """The noise-free target f(x) = sin(10 |x|).

  Args:
    x: points, shape ``[..., 2]``.

  Returns:
    ``sin(10 * ||x||_2)`` per point, shape ``x.shape[:-1]``.
  """
  return np.sin(10.0 * np.linalg.norm(x, axis=-1))


class Split(NamedTuple):
  """A set of points and targets.

  Attributes:
    x: inputs, float32 ``[n, 2]``.
    y: targets, float32 ``[n]``.
  """

  x: np.ndarray
  y: np.ndarray


class Datasets(NamedTuple):
  """The splits of one seed.

  Attributes:
    old_train: original-domain training data (noisy targets).
    new_train: new-domain training data (noisy targets).
    old_test: original-domain test data (noise-free targets).
    new_test: new-domain test data (noise-free targets).
    old_val: original-domain held-out data (noise-free targets).
    new_val: new-domain held-out data (noise-free targets).
  """

  old_train: Split
  new_train: Split
  old_test: Split
  new_test: Split
  old_val: Split
  new_val: Split


def make_split(
  rng: np.random.Generator,
  n: int,
  domain: tuple[float, float],
  noise_std: float,
) -> Split:
  """Draws ``n`` points uniformly from ``domain`` squared.

  Args:
    rng: a NumPy generator.
    n: number of points.
    domain: ``(low, high)``; both coordinates are ~ U[low, high].
    noise_std: standard deviation of the Gaussian noise added to the targets
      (0 for test sets).

  Returns:
    A :class:`Split`.
  """
  low, high = domain
  x = rng.uniform(low, high, size=(n, 2))
  y = target_fn(x)
  if noise_std:
    y = y + noise_std * rng.standard_normal(n)
  return Split(x.astype(np.float32), y.astype(np.float32))


def make_datasets(
  seed: int,
  *,
  n_train: int,
  n_test: int,
  old_domain: tuple[float, float],
  new_domain: tuple[float, float],
  noise_std: float,
  n_val: int = 0,
) -> Datasets:
  """Draws the original/new training, test and held-out sets of one seed.

  Args:
    seed: the seed; each split uses its own child generator.
    n_train: training points per domain (50,000 in the paper).
    n_test: test points per domain.
    old_domain: ``(low, high)`` of the original domain.
    new_domain: ``(low, high)`` of the new domain.
    noise_std: noise on the training targets (1 in the paper).
    n_val: held-out points per domain (may be 0).

  Returns:
    The :class:`Datasets`; test and held-out targets are noise-free. The
    held-out sets come from generators of their own, so the other four
    splits do not depend on ``n_val``.
  """
  # Child k of a SeedSequence does not depend on how many are spawned.
  rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
  return Datasets(
    old_train=make_split(rngs[0], n_train, old_domain, noise_std),
    new_train=make_split(rngs[1], n_train, new_domain, noise_std),
    old_test=make_split(rngs[2], n_test, old_domain, 0.0),
    new_test=make_split(rngs[3], n_test, new_domain, 0.0),
    old_val=make_split(rngs[4], n_val, old_domain, 0.0),
    new_val=make_split(rngs[5], n_val, new_domain, 0.0),
  )


class EpochSampler:
  """Yields batch indices, reshuffling the data at every epoch.

  Example:
    >>> sampler = EpochSampler(num_examples=10, batch_size=4, seed=0)
    >>> sampler.next_indices(3).shape
    (3, 4)
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    """Creates the sampler.

    Args:
      num_examples: size of the dataset.
      batch_size: examples per batch, at most ``num_examples``.
      seed: seed of the shuffling.
    """
    if not 1 <= batch_size <= num_examples:
      raise ValueError(
        f"`batch_size` must be in [1, {num_examples}] (the training set "
        f"size), got {batch_size}."
      )
    self._n = num_examples
    self._batch_size = batch_size
    self._rng = np.random.default_rng(seed)
    self._perm = self._rng.permutation(self._n)
    self._pos = 0

  def next_indices(self, num_batches: int) -> np.ndarray:
    """The indices of the next ``num_batches`` batches.

    Args:
      num_batches: how many batches.

    Returns:
      int32 array ``[num_batches, batch_size]``. A batch never spans two
      epochs: the tail of an epoch shorter than a batch is dropped.
    """
    out = np.empty((num_batches, self._batch_size), np.int32)
    for i in range(num_batches):
      if self._pos + self._batch_size > self._n:
        self._perm = self._rng.permutation(self._n)
        self._pos = 0
      out[i] = self._perm[self._pos : self._pos + self._batch_size]
      self._pos += self._batch_size
    return out
