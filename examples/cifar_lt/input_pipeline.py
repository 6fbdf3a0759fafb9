"""CIFAR-100-LT input pipeline: ``tfds.data_source`` + grain, no TensorFlow.

Copied in part from ``examples/cifar/input_pipeline.py`` (the examples are
standalone). A split is read once through ``tfds.data_source`` into uint8
arrays in memory. The long-tailed training set follows Cui et al. (2019):
class ``i`` of ``C`` keeps ``floor(n_max * beta ** (-i / (C - 1)))`` images
(:func:`long_tail_counts`), chosen by a fixed seeded permutation within the
class. :func:`select_classes` splits it into the base classes (stage 1) and the
held-out classes (stage 2). Training batches come from grain ``MapDataset``\\ s
(seeded shuffle, batching, gather, batch-level random crop + flip in NumPy);
an epoch is a pure function of ``(seed, epoch)``. :func:`batch_stream` chains
epochs into an endless stream of batches, so that a budget of batches does
not depend on how many images the (tiny) held-out set has.

Example:
  >>> long_tail_counts(100, 10.0, 100)[[0, 90, 99]]
  array([100,  12,  10])
"""

import functools
import itertools
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import grain
import numpy as np

PAD = 4  # Pixels of zero padding before the random 32x32 crop.
IMAGE_SHAPE = (32, 32, 3)


class Split(NamedTuple):
  """One split of a dataset, in memory.

  Attributes:
    images: uint8 ``[n, 32, 32, 3]``.
    labels: int32 ``[n]``.
  """

  images: np.ndarray
  labels: np.ndarray


def _read_split(split: str, data_dir: str | None) -> Split:
  """Reads and decodes a whole CIFAR-100 split through ``tfds.data_source``."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  source = tfds.data_source("cifar100", split=split, data_dir=data_dir)
  n = len(source)
  images = np.empty((n, *IMAGE_SHAPE), np.uint8)
  labels = np.empty((n,), np.int32)
  for i in range(n):
    example = source[i]
    images[i] = example["image"]
    labels[i] = example["label"]
  return Split(images, labels)


@functools.lru_cache(maxsize=4)
def _cached_split(split: str, data_dir: str | None) -> Split:
  return _read_split(split, data_dir)


def clear_cache() -> None:
  """Forgets the splits kept in memory by :func:`load_split`."""
  _cached_split.cache_clear()


def load_split(split: str, data_dir: str | None = None) -> Split:
  """Loads a CIFAR-100 split (fine labels) into memory, once per process.

  Args:
    split: a TFDS split, ``"train"`` or ``"test"``.
    data_dir: TFDS data directory; ``None`` is TFDS's default (where
      ``tfds.data_source`` downloads and prepares the dataset on first use).

  Returns:
    A :class:`Split` of uint8 images and int32 labels.
  """
  return _cached_split(split, data_dir)


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


def take(split: Split, n: int | None) -> Split:
  """The first ``n`` examples of ``split`` (all of them for ``None``)."""
  if n is None or n >= len(split.labels):
    return split
  return Split(split.images[:n], split.labels[:n])


def augment_batch(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Random 32x32 crop of the 4-pixel zero-padded images, then random flip.

  Args:
    images: uint8 ``[b, h, w, c]``.
    rng: the random generator (one draw of offsets and flips per image).

  Returns:
    Augmented uint8 images of the same shape.
  """
  b, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
  dy = rng.integers(0, 2 * PAD + 1, size=b)
  dx = rng.integers(0, 2 * PAD + 1, size=b)
  flip = rng.random(b) < 0.5
  rows = (dy[:, None] + np.arange(h))[:, :, None]
  cols = np.where(
    flip[:, None], dx[:, None] + np.arange(w)[::-1], dx[:, None] + np.arange(w)
  )[:, None, :]
  return padded[np.arange(b)[:, None, None], rows, cols]


def epoch_seed(seed: int, epoch: int) -> int:
  """A 32-bit seed for one epoch, derived from the run's seed."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def train_dataset(
  split: Split,
  batch_size: int,
  *,
  seed: int,
  epoch: int,
  augment: bool = True,
) -> grain.MapDataset:
  """One epoch of shuffled (and augmented) training batches.

  Args:
    split: the training examples.
    batch_size: examples per batch; the last partial batch is dropped.
    seed: the run's seed.
    epoch: the epoch (0-based); each epoch has its own order and augmentation.
    augment: apply :func:`augment_batch` (random crop + flip).

  Returns:
    A grain ``MapDataset`` of dicts with ``image`` (uint8
    ``[batch_size, 32, 32, 3]``) and ``label`` (int32 ``[batch_size]``).

  Raises:
    ValueError: naming ``batch_size`` if it is not positive or exceeds the
      split.
  """
  n = len(split.labels)
  if not 1 <= batch_size <= n:
    raise ValueError(
      f"`batch_size` must be in [1, {n}] (the training examples), got {batch_size}."
    )
  images, labels = split.images, split.labels
  s = epoch_seed(seed, epoch)

  def gather(indices: np.ndarray) -> dict[str, np.ndarray]:
    return {"image": images[indices], "label": labels[indices]}

  def augment_fn(batch: dict[str, np.ndarray], rng: np.random.Generator):
    return {"image": augment_batch(batch["image"], rng), "label": batch["label"]}

  ds = grain.MapDataset.range(n).shuffle(seed=s)
  ds = ds.batch(batch_size, drop_remainder=True).map(gather)
  if augment:
    ds = ds.random_map(augment_fn, seed=s)
  return ds


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


def eval_batches(split: Split, batch_size: int) -> Iterator[dict[str, Any]]:
  """Evaluation batches in order, not augmented, the last one zero-padded.

  Args:
    split: the examples.
    batch_size: examples per batch.

  Yields:
    Dicts with ``image`` (uint8 ``[batch_size, 32, 32, 3]``), ``label`` and
    ``mask`` (bool, False on padding).

  Raises:
    ValueError: naming ``batch_size`` if it is not positive.
  """
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
  n = len(split.labels)
  for start in range(0, n, batch_size):
    image = split.images[start : start + batch_size]
    label = split.labels[start : start + batch_size]
    pad = batch_size - len(label)
    mask = np.ones(len(label), bool)
    if pad:
      image = np.concatenate([image, np.zeros((pad, *image.shape[1:]), np.uint8)])
      label = np.concatenate([label, np.zeros(pad, label.dtype)])
      mask = np.concatenate([mask, np.zeros(pad, bool)])
    yield {"image": image, "label": label, "mask": mask}
