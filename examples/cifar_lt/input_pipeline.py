"""CIFAR-100-LT: the CIFAR example's pipeline (re-exported) plus the long tail,
``floor(n_max * beta ** (-i / (C - 1)))`` images of class ``i`` (Cui et al.)."""

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from examples.cifar import input_pipeline as _cifar
from examples.cifar.input_pipeline import (  # noqa: F401 (re-exported)
  Split,
  clear_cache,
  eval_dataset,
  train_dataset,
)

NUM_CLASSES = 100
Batch = dict[str, np.ndarray]


def long_tail_counts(n_max: int, beta: float, num_classes: int) -> np.ndarray:
  """Images per class (with ``n_max = 500``, CIFAR-100-LT's published sizes)."""
  if n_max < 1:
    raise ValueError(f"`n_max` must be >= 1, got {n_max}.")
  if beta < 1:
    raise ValueError(f"`beta` (imbalance ratio) must be >= 1, got {beta}.")
  if num_classes < 2:
    raise ValueError(f"`num_classes` must be >= 2, got {num_classes}.")
  # Cui et al.'s expression, int() truncation included (their and LDAM's code).
  counts = [
    int(n_max * (1.0 / beta) ** (i / (num_classes - 1.0))) for i in range(num_classes)
  ]
  return np.asarray(counts, np.int64)


def long_tail(split: Split, beta: float, *, n_max=None, seed: int = 0) -> Split:
  """The long-tailed subset of a balanced split, classes in increasing order.

  Each class's images are picked by a ``seed``-ed permutation; ``n_max`` (images
  of class 0) defaults to the smallest class's size.
  """
  num_classes = int(split.labels.max()) + 1
  sizes = np.bincount(split.labels, minlength=num_classes)
  if n_max is None:
    n_max = int(sizes.min())
  counts = long_tail_counts(n_max, beta, num_classes)
  short = np.flatnonzero(sizes < counts)
  if short.size:
    raise ValueError(
      f"`n_max` = {n_max} asks for more images than class {short[0]} has "
      f"({sizes[short[0]]})."
    )
  rng = np.random.default_rng(seed)
  chosen = []
  for label, count in enumerate(counts):
    members = np.flatnonzero(split.labels == label)
    chosen.append(members[rng.permutation(members.size)[:count]])
  indices = np.concatenate(chosen)
  return Split(split.images[indices], split.labels[indices])


def batch_stream(
  split: Split, batch_size: int, *, seed: int, augment=True
) -> Iterator[Batch]:
  """The batches of :func:`train_dataset` for epochs 0, 1, 2, ... (endless)."""
  for epoch in itertools.count():
    ds = train_dataset(split, batch_size, seed=seed, epoch=epoch, augment=augment)
    for i in range(len(ds)):
      yield ds[i]


def stacked(stream: Iterator[Batch], group: int) -> Iterator[Batch]:
  """Stacks ``group`` consecutive batches of ``stream`` along a new axis."""
  while True:
    items = list(itertools.islice(stream, group))
    if len(items) < group:
      return
    yield {k: np.stack([b[k] for b in items]) for k in items[0]}


@dataclasses.dataclass(frozen=True)
class Data:
  """The splits of one imbalance ratio ``beta`` (``test`` is balanced)."""

  beta: float
  counts: np.ndarray  # training images per class of the long tail, [100]
  base_train: Split  # long-tailed images of the base classes (stage 1)
  held_out_train: Split  # long-tailed images of the held-out classes (stage 2)
  test: Split  # all 100 classes
  num_base: int  # labels < num_base are base classes

  def sizes(self) -> dict[str, int]:
    """Number of images per split."""
    return {
      "base_train": len(self.base_train.labels),
      "held_out_train": len(self.held_out_train.labels),
      "test": len(self.test.labels),
      "test_base": int(np.sum(self.test.labels < self.num_base)),
      "test_held_out": int(np.sum(self.test.labels >= self.num_base)),
    }


def load_data(config: Any, beta: float) -> Data:
  """The CIFAR-100-LT splits of ``beta`` from ``config.data_dir``."""
  train = _cifar.load_split("cifar100", "train", config.data_dir)
  test = _cifar.load_split("cifar100", "test", config.data_dir)
  test = _cifar.take(test, config.test_examples)
  lt = long_tail(train, beta, n_max=config.n_max, seed=config.lt_seed)
  num_base = NUM_CLASSES - config.held_out_classes
  base = lt.labels < num_base
  return Data(
    beta=beta,
    counts=np.bincount(lt.labels, minlength=NUM_CLASSES),
    base_train=Split(lt.images[base], lt.labels[base]),
    held_out_train=Split(lt.images[~base], lt.labels[~base]),
    test=test,
    num_base=num_base,
  )
