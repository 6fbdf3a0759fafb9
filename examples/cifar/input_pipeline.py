"""CIFAR input pipeline: ``tfds.data_source`` into memory, then grain (no TensorFlow).

An epoch is a pure function of ``(seed, epoch)``, so a run resumes exactly.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import grain
import numpy as np

PAD = 4  # Pixels of zero padding before the random 32x32 crop.
IMAGE_SHAPE = (32, 32, 3)


class Split(NamedTuple):
  """One split in memory: uint8 ``images [n, 32, 32, 3]``, int32 ``labels [n]``."""

  images: np.ndarray
  labels: np.ndarray


def _read_split(dataset: str, split: str, data_dir: str | None) -> Split:
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


_cached_split = functools.lru_cache(maxsize=8)(_read_split)


def clear_cache() -> None:
  """Forgets the splits kept in memory by :func:`load_split`."""
  _cached_split.cache_clear()


def load_split(dataset: str, split: str, data_dir=None, *, cache=True) -> Split:
  """A split of ``cifar10`` or ``cifar100`` (fine labels), cached if ``cache``."""
  if dataset not in ("cifar10", "cifar100"):
    raise ValueError(f"`dataset` must be 'cifar10' or 'cifar100', got {dataset!r}.")
  return (_cached_split if cache else _read_split)(dataset, split, data_dir)


def take(split: Split, n: int | None) -> Split:
  """The first ``n`` examples of ``split`` (all of them for ``None``)."""
  if n is None or n >= len(split.labels):
    return split
  return Split(split.images[:n], split.labels[:n])


def holdout(split: Split, n: int, *, seed: int = 0) -> tuple[Split, Split]:
  """``(rest, held_out)``: ``n`` examples chosen with ``seed``, both in order."""
  total = len(split.labels)
  if not 0 <= n < total:
    raise ValueError(f"`n` (held-out examples) must be in [0, {total}), got {n}.")
  chosen = np.zeros(total, bool)
  chosen[np.random.default_rng(seed).permutation(total)[:n]] = True
  return tuple(Split(split.images[m], split.labels[m]) for m in (~chosen, chosen))


def augment_batch(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Random 32x32 crops of the 4-pixel zero-padded ``[b, h, w, c]``, random flips."""
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


def train_dataset(split, batch_size, *, seed, epoch, group=1, augment=True):
  """One epoch of shuffled, augmented batches (partial ones dropped).

  ``group > 1`` stacks that many consecutive batches on a new leading axis
  (``n_ref + 1`` for ``optax_profit.make_train_step``).
  """
  for name, value in (("batch_size", batch_size), ("group", group)):
    if value < 1:
      raise ValueError(f"`{name}` must be >= 1, got {value}.")
  n = len(split.labels)
  if n < batch_size * group:
    raise ValueError(
      f"`batch_size` * `group` ({batch_size} * {group}) exceeds the "
      f"{n} training examples."
    )
  images, labels = split.images, split.labels
  s = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])  # the epoch's

  def augment_fn(batch: dict[str, np.ndarray], rng: np.random.Generator):
    return {"image": augment_batch(batch["image"], rng), "label": batch["label"]}

  ds = grain.MapDataset.range(n).shuffle(seed=s).batch(batch_size, drop_remainder=True)
  ds = ds.map(lambda indices: {"image": images[indices], "label": labels[indices]})
  if augment:
    ds = ds.random_map(augment_fn, seed=s)
  if group > 1:
    ds = ds.batch(group, drop_remainder=True)
  return ds


def eval_dataset(split: Split, batch_size: int) -> grain.MapDataset:
  """Batches in order, not augmented, the last zero-padded (``mask`` False there)."""
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")

  def gather(indices: np.ndarray) -> dict[str, Any]:
    pad = lambda a: np.pad(
      a[indices], [(0, batch_size - len(indices))] + [(0, 0)] * (a.ndim - 1)
    )
    mask = np.arange(batch_size) < len(indices)
    return {"image": pad(split.images), "label": pad(split.labels), "mask": mask}

  return grain.MapDataset.range(len(split.labels)).batch(batch_size).map(gather)


@dataclasses.dataclass(frozen=True)
class Data:
  """The splits; ``*_val`` are held out of ``*_train`` (``c10_val`` may be empty)."""

  c10_train: Split
  c10_val: Split
  c10_test: Split
  c100_train: Split
  c100_val: Split
  c100_test: Split

  def sizes(self) -> dict[str, int]:
    """Examples per split (``c10_val`` only when it is not empty)."""
    sizes = {name: len(split.labels) for name, split in vars(self).items()}
    if not sizes["c10_val"]:
      del sizes["c10_val"]  # The Table 2 runs keep their folder names.
    return sizes


def load_data(config: Any) -> Data:
  """CIFAR-10 and CIFAR-100 after the config's ``*_examples`` limits and holdouts."""

  def load(dataset: str, split: str, n: int | None) -> Split:
    return take(load_split(dataset, split, config.data_dir), n)

  c100_train, c100_val = holdout(
    load("cifar100", "train", config.train_examples), config.val_examples
  )
  c10_train, c10_val = holdout(
    load("cifar10", "train", config.train_examples), config.c10_val_examples
  )
  c10_test = load("cifar10", "test", config.test_examples)
  c100_test = load("cifar100", "test", config.test_examples)
  return Data(c10_train, c10_val, c10_test, c100_train, c100_val, c100_test)
