"""Data of the toy example: f(x) = sin(10 |x|) on squares of the plane, N(0,
noise_std^2) noise on training targets only; a seed fixes the data."""

import collections

import numpy as np


def target_fn(x: np.ndarray) -> np.ndarray:
  """``sin(10 * ||x||_2)`` for points ``x`` of shape ``[..., 2]``."""
  return np.sin(10.0 * np.linalg.norm(x, axis=-1))


#: Inputs float32 ``[n, 2]``, targets float32 ``[n]``.
Split = collections.namedtuple("Split", "x y")
#: The splits of one seed (train: noisy targets; test, val: noise-free).
SPLITS = "old_train new_train old_test new_test old_val new_val"
Datasets = collections.namedtuple("Datasets", SPLITS)


def make_split(rng, n: int, domain, noise_std: float) -> Split:
  """``n`` points uniform on ``domain`` squared, targets plus N(0, noise_std^2)."""
  low, high = domain
  x = rng.uniform(low, high, size=(n, 2))
  y = target_fn(x)
  if noise_std:
    y = y + noise_std * rng.standard_normal(n)
  return Split(x.astype(np.float32), y.astype(np.float32))


def make_datasets(
  seed: int, *, n_train, n_test, old_domain, new_domain, noise_std, n_val=0
) -> Datasets:
  """The splits of one seed, each from its own child generator (child k of a
  SeedSequence does not depend on how many are spawned: ``n_val`` changes none)."""

  rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
  sizes = (n_train, n_train, n_test, n_test, n_val, n_val)
  noises = (noise_std, noise_std, 0.0, 0.0, 0.0, 0.0)
  domains = (old_domain, new_domain) * 3
  return Datasets(*map(make_split, rngs, sizes, domains, noises))


class EpochSampler:
  """Batch indices, reshuffled every epoch (its tail shorter than a batch dropped)."""

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if not 1 <= batch_size <= num_examples:
      size = f"[1, {num_examples}] (the training set size)"
      raise ValueError(f"`batch_size` must be in {size}, got {batch_size}.")
    self._n, self._batch_size = num_examples, batch_size
    self._rng = np.random.default_rng(seed)
    self._pos = num_examples  # The first batch starts an epoch.

  def next_indices(self, num_batches: int) -> np.ndarray:
    """int32 ``[num_batches, batch_size]``."""
    out = np.empty((num_batches, self._batch_size), np.int32)
    for i in range(num_batches):
      if self._pos + self._batch_size > self._n:
        self._perm = self._rng.permutation(self._n)
        self._pos = 0
      out[i] = self._perm[self._pos : self._pos + self._batch_size]
      self._pos += self._batch_size
    return out
