"""CIFAR-100-LT input pipeline: the CIFAR example's, plus the long tail.

The splits, batches and augmentation are ``examples/cifar/input_pipeline.py``'s
(re-exported here): a split is read once through ``tfds.data_source`` into
uint8 arrays in memory, and training batches come from grain ``MapDataset``\\ s
(seeded shuffle, batching, gather, batch-level random crop + flip in NumPy);
an epoch is a pure function of ``(seed, epoch)``. This module adds the
long-tailed training set of Cui et al. (2019): class ``i`` of ``C`` keeps
``floor(n_max * beta ** (-i / (C - 1)))`` images (:func:`long_tail_counts`),
chosen by a fixed seeded permutation within the class. :func:`select_classes`
splits it into the base classes (stage 1) and the held-out classes (stage 2).
:func:`batch_stream` chains epochs into an endless stream of batches, so that
a budget of batches does not depend on how many images the (tiny) held-out set
has.

Example:
  >>> long_tail_counts(100, 10.0, 100)[[0, 90, 99]]
  array([100,  12,  10])
"""

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from examples.cifar import input_pipeline as _cifar
from examples.cifar.input_pipeline import (  # noqa: F401 (re-exported)
  Split,
  augment_batch,
  clear_cache,
  eval_dataset,
  take,
  train_dataset,
)


def load_split(split: str, data_dir: str | None = None) -> Split:
  """Loads a CIFAR-100 split (fine labels) into memory, once per process.

  Args:
    split: a TFDS split, ``"train"`` or ``"test"``.
    data_dir: TFDS data directory; ``None`` is TFDS's default (where
      ``tfds.data_source`` downloads and prepares the dataset on first use).

  Returns:
    A :class:`Split` of uint8 images and int32 labels.
  """
  return _cifar.load_split("cifar100", split, data_dir)


def long_tail_counts(n_max: int, beta: float, num_classes: int) -> np.ndarray:
  """Images per class of the exponential long tail (Cui et al., 2019).

  Args:
    n_max: images of class 0, the most frequent.
    beta: imbalance ratio ``n_0 / n_{C-1}``, ``>= 1``.
    num_classes: ``C``, ``>= 2``.

  Returns:
    int64 ``[C]``: ``floor(n_max * beta ** (-i / (C - 1)))`` for class ``i``.
    With ``n_max = 500`` this gives the published CIFAR-100-LT sizes
    (19,573 training images at ``beta = 10``, 10,847 at 100).

  Raises:
    ValueError: naming the argument that is out of range.
  """
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


def long_tail(
  split: Split, beta: float, *, n_max: int | None = None, seed: int = 0
) -> Split:
  """The long-tailed subset of a balanced split.

  Args:
    split: the balanced training split (labels ``0 .. C - 1``, ``C`` the
      largest label + 1).
    beta: imbalance ratio.
    n_max: images of class 0; ``None``: the smallest class's size in
      ``split``.
    seed: seed of the per-class permutation that picks the images (fixed, so
      every run sees the same subset).

  Returns:
    The subset, classes in increasing order, each class's images in the
    order of its permutation.

  Raises:
    ValueError: naming ``n_max`` if a class has fewer images than it asks for.
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


def select_classes(split: Split, classes: Sequence[int]) -> Split:
  """The examples of ``split`` whose label is in ``classes``, in order."""
  keep = np.isin(split.labels, np.asarray(classes))
  return Split(split.images[keep], split.labels[keep])


def batch_stream(
  split: Split, batch_size: int, *, seed: int, augment: bool = True
) -> Iterator[dict[str, np.ndarray]]:
  """An endless stream of training batches, epoch after epoch.

  Args:
    split: the training examples.
    batch_size: examples per batch (each epoch drops its partial batch).
    seed: the run's seed.
    augment: apply :func:`augment_batch`.

  Yields:
    The batches of :func:`train_dataset` for epochs 0, 1, 2, ...
  """
  for epoch in itertools.count():
    ds = train_dataset(split, batch_size, seed=seed, epoch=epoch, augment=augment)
    for i in range(len(ds)):
      yield ds[i]


def stacked(
  stream: Iterator[dict[str, np.ndarray]], group: int
) -> Iterator[dict[str, np.ndarray]]:
  """Stacks ``group`` consecutive batches of ``stream`` along a new axis.

  Args:
    stream: batches (dicts of arrays).
    group: batches per stacked item (``cycle_length`` of the train step).

  Yields:
    Dicts whose arrays have a leading axis of size ``group``.
  """
  while True:
    items = list(itertools.islice(stream, group))
    if len(items) < group:
      return
    yield {k: np.stack([b[k] for b in items]) for k in items[0]}


# The splits of one imbalance ratio.

NUM_CLASSES = 100


@dataclasses.dataclass(frozen=True)
class Data:
  """The splits of one imbalance ratio.

  Attributes:
    beta: the imbalance ratio.
    counts: training images per class of the long tail, ``[100]``.
    base_train: long-tailed training images of the base classes (stage 1).
    held_out_train: long-tailed training images of the held-out classes
      (stage 2).
    test: the balanced test images of all 100 classes.
    num_base: the number of base classes (labels ``< num_base``).
  """

  beta: float
  counts: np.ndarray
  base_train: Split
  held_out_train: Split
  test: Split
  num_base: int

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
  """The CIFAR-100-LT splits of ``beta`` (``config.data_dir``).

  Args:
    config: supplies ``data_dir``, ``n_max``, ``lt_seed``,
      ``held_out_classes`` and ``test_examples``.
    beta: the imbalance ratio.

  Returns:
    The :class:`Data`.
  """
  train = load_split("train", config.data_dir)
  test = take(load_split("test", config.data_dir), config.test_examples)
  lt = long_tail(train, beta, n_max=config.n_max, seed=config.lt_seed)
  num_base = NUM_CLASSES - config.held_out_classes
  return Data(
    beta=beta,
    counts=np.bincount(lt.labels, minlength=NUM_CLASSES),
    base_train=select_classes(lt, range(num_base)),
    held_out_train=select_classes(lt, range(num_base, NUM_CLASSES)),
    test=test,
    num_base=num_base,
  )
