"""CIFAR input pipeline: ``tfds.data_source`` + grain, no TensorFlow.

Each split is read once through ``tfds.data_source`` (array_record files,
random access, images decoded without TensorFlow) into uint8 arrays held in
memory (CIFAR-10/100: 150 MB per 50,000-image split). Batches are then built
with grain's ``MapDataset``: a seeded shuffle of the example indices, batching,
a gather from the arrays, and random-crop (4-pixel zero padding) plus
horizontal-flip augmentation done on whole batches in NumPy inside a grain
``random_map``. Grain seeds the augmentation of batch ``i`` from the epoch's
seed and ``i``, so an epoch is a pure function of ``(seed, epoch)``: runs are
reproducible and resume exactly from a checkpoint taken at an epoch boundary.
Augmentation is applied to training batches only; evaluation batches are the
images as stored, in order, padded to full batches with a ``mask``.

Example:
  >>> split = Split(np.zeros((10, 32, 32, 3), np.uint8), np.arange(10))
  >>> ds = train_dataset(split, batch_size=4, seed=0, epoch=0)
  >>> [b["image"].shape for b in ds]
  [(4, 32, 32, 3), (4, 32, 32, 3)]
"""

import dataclasses
import functools
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


def _read_split(dataset: str, split: str, data_dir: str | None) -> Split:
  """Reads and decodes a whole split through ``tfds.data_source``."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  source = tfds.data_source(dataset, split=split, data_dir=data_dir)
  n = len(source)
  images = np.empty((n, *IMAGE_SHAPE), np.uint8)
  labels = np.empty((n,), np.int32)
  for i in range(n):
    example = source[i]
    images[i] = example["image"]
    labels[i] = example["label"]
  return Split(images, labels)


@functools.lru_cache(maxsize=8)
def _cached_split(dataset: str, split: str, data_dir: str | None) -> Split:
  return _read_split(dataset, split, data_dir)


def clear_cache() -> None:
  """Forgets the splits kept in memory by :func:`load_split`."""
  _cached_split.cache_clear()


def load_split(
  dataset: str, split: str, data_dir: str | None = None, *, cache: bool = True
) -> Split:
  """Loads a CIFAR split into memory.

  Args:
    dataset: a TFDS name, ``"cifar10"`` or ``"cifar100"``.
    split: a TFDS split, e.g. ``"train"``, ``"test"`` or ``"train[:1000]"``.
    data_dir: TFDS data directory; ``None`` is TFDS's default (where
      ``tfds.data_source`` downloads and prepares the dataset on first use).
    cache: keep the decoded split in memory for later calls in this process.

  Returns:
    A :class:`Split` of uint8 images and int32 labels (the fine labels for
    CIFAR-100).

  Raises:
    ValueError: naming ``dataset`` if it is not a CIFAR dataset.
  """
  if dataset not in ("cifar10", "cifar100"):
    raise ValueError(f"`dataset` must be 'cifar10' or 'cifar100', got {dataset!r}.")
  if cache:
    return _cached_split(dataset, split, data_dir)
  return _read_split(dataset, split, data_dir)


def take(split: Split, n: int | None) -> Split:
  """The first ``n`` examples of ``split`` (all of them for ``None``)."""
  if n is None or n >= len(split.labels):
    return split
  return Split(split.images[:n], split.labels[:n])


def holdout(split: Split, n: int, *, seed: int = 0) -> tuple[Split, Split]:
  """Splits off ``n`` random examples (e.g. a validation set).

  Args:
    split: the examples.
    n: how many to hold out, ``0 <= n < len(split)``.
    seed: seed of the random choice (fixed, so every run holds out the same
      examples).

  Returns:
    ``(rest, held_out)``, each in the original order.

  Raises:
    ValueError: naming ``n`` if it is out of range.
  """
  total = len(split.labels)
  if not 0 <= n < total:
    raise ValueError(f"`n` (held-out examples) must be in [0, {total}), got {n}.")
  chosen = np.zeros(total, bool)
  chosen[np.random.default_rng(seed).permutation(total)[:n]] = True
  return (
    Split(split.images[~chosen], split.labels[~chosen]),
    Split(split.images[chosen], split.labels[chosen]),
  )


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
  group: int = 1,
  augment: bool = True,
) -> grain.MapDataset:
  """One epoch of shuffled, augmented training batches.

  Args:
    split: the training examples.
    batch_size: examples per batch; the last partial batch is dropped.
    seed: the run's seed.
    epoch: the epoch (0-based); each epoch has its own order and augmentation.
    group: consecutive batches stacked along a new leading axis (``n_ref + 1``
      for ``optax_profit.make_train_step``); trailing batches that do not fill
      a group are dropped.
    augment: apply :func:`augment_batch` (random crop + flip).

  Returns:
    A grain ``MapDataset`` (indexable, with ``len``) of dicts with ``image``
    (uint8 ``[group, batch_size, 32, 32, 3]``) and ``label`` (int32
    ``[group, batch_size]``); without the ``group`` axis when ``group == 1``.

  Raises:
    ValueError: naming the argument, if ``batch_size`` or ``group`` is not
      positive or the split has fewer than ``batch_size * group`` examples.
  """
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
  if group < 1:
    raise ValueError(f"`group` must be >= 1, got {group}.")
  n = len(split.labels)
  if n < batch_size * group:
    raise ValueError(
      f"`batch_size` * `group` ({batch_size} * {group}) exceeds the "
      f"{n} training examples."
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
  if group > 1:
    ds = ds.batch(group, drop_remainder=True)
  return ds


def eval_dataset(split: Split, batch_size: int) -> grain.MapDataset:
  """Evaluation batches in order, without augmentation.

  Args:
    split: the examples.
    batch_size: examples per batch; the last batch is zero-padded.

  Returns:
    A grain ``MapDataset`` of dicts with ``image`` (uint8
    ``[batch_size, 32, 32, 3]``), ``label`` (int32 ``[batch_size]``) and
    ``mask`` (bool ``[batch_size]``, False on padding).

  Raises:
    ValueError: naming ``batch_size`` if it is not positive.
  """
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
  n = len(split.labels)

  def gather(indices: np.ndarray) -> dict[str, Any]:
    pad = batch_size - len(indices)
    image = split.images[indices]
    label = split.labels[indices]
    mask = np.ones(len(indices), bool)
    if pad:
      image = np.concatenate([image, np.zeros((pad, *image.shape[1:]), np.uint8)])
      label = np.concatenate([label, np.zeros(pad, label.dtype)])
      mask = np.concatenate([mask, np.zeros(pad, bool)])
    return {"image": image, "label": label, "mask": mask}

  return grain.MapDataset.range(n).batch(batch_size).map(gather)


# ----------------------------------------------------------------------------
# The splits of the CIFAR-10 -> CIFAR-100 experiment.


@dataclasses.dataclass(frozen=True)
class Data:
  """The splits of one experiment.

  Attributes:
    c10_train: CIFAR-10 training images (pre-training) minus the validation
      images.
    c10_val: CIFAR-10 training images held out from pre-training (old-task
      validation of the frontier; may be empty).
    c10_test: CIFAR-10 test images (retention).
    c100_train: CIFAR-100 training images minus the validation images.
    c100_val: CIFAR-100 training images held out to select learning rates.
    c100_test: CIFAR-100 test images (transfer).
  """

  c10_train: Split
  c10_val: Split
  c10_test: Split
  c100_train: Split
  c100_val: Split
  c100_test: Split

  def sizes(self) -> dict[str, int]:
    """Number of examples per split (``c10_val`` only when it is not empty)."""
    sizes = {
      f.name: len(getattr(self, f.name).labels) for f in dataclasses.fields(self)
    }
    if not sizes["c10_val"]:
      del sizes["c10_val"]  # The Table 2 runs keep their folder names.
    return sizes


def load_data(config: Any) -> Data:
  """Loads CIFAR-10 and CIFAR-100 (``config.data_dir``) into memory.

  Args:
    config: supplies ``data_dir``, ``train_examples``, ``test_examples``,
      ``val_examples`` and ``c10_val_examples``.

  Returns:
    The :class:`Data`.
  """

  def load(dataset: str, split: str, n: int | None) -> Split:
    return take(load_split(dataset, split, config.data_dir), n)

  c100_train, c100_val = holdout(
    load("cifar100", "train", config.train_examples), config.val_examples
  )
  c10_train, c10_val = holdout(
    load("cifar10", "train", config.train_examples), config.c10_val_examples
  )
  return Data(
    c10_train=c10_train,
    c10_val=c10_val,
    c10_test=load("cifar10", "test", config.test_examples),
    c100_train=c100_train,
    c100_val=c100_val,
    c100_test=load("cifar100", "test", config.test_examples),
  )
