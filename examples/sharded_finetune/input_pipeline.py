"""Byte-level text from the Python standard library, split into two domains.

Every Python installation ships its standard library as source, so the data is
on every machine, offline. The ``.py`` files under
``sysconfig.get_paths()["stdlib"]`` (without ``site-packages``, the test
suites and the machine-generated ``_sysconfigdata_*``) are split by the name
of their top-level module, leading underscores stripped: modules whose name
starts with a letter up to ``split_letter`` (``a``-``m`` by default: asyncio,
collections, email, http, json, logging, ...) form the *old* domain that the
model is pre-trained on; the others (``n``-``z``: os, pathlib, re, sqlite3,
typing, unittest, urllib, xml, ...) form the *new* domain it is fine-tuned on.
Within a domain a file goes to validation when ``crc32(path) % val_mod == 0``
(whole files, so validation text is unseen), otherwise to training.

Batches are random windows of ``seq_len + 1`` bytes drawn by a NumPy generator
seeded by ``(seed, stream, step)``: a batch depends on its step number only,
so a resumed run sees exactly the batches the uninterrupted run would have,
and every fine-tuning method sees the same batches in the same order. The
data (and so the numbers) depend on the Python version's standard library.
"""

import hashlib
import pathlib
import sysconfig
import zlib
from typing import NamedTuple

import numpy as np

#: Directories of the standard library that are not library code.
EXCLUDED_DIRS = frozenset(
  {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)
#: Byte between two files of a stream (ASCII "record separator").
FILE_SEPARATOR = 0x1E
VOCAB_SIZE = 256


class Domain(NamedTuple):
  """The text of one domain.

  Attributes:
    name: ``"old"`` or ``"new"``.
    modules: top-level module names in the domain, sorted.
    train: training bytes, uint8 ``[n_train]`` (files joined by
      :data:`FILE_SEPARATOR`).
    val: validation bytes, uint8 ``[n_val]``.
    n_files: number of ``(train, val)`` files.
    sha256: digest of ``train`` and ``val``, to compare data across machines.
  """

  name: str
  modules: tuple[str, ...]
  train: np.ndarray
  val: np.ndarray
  n_files: tuple[int, int]
  sha256: str


def stdlib_root() -> pathlib.Path:
  """The directory of the running Python's standard library sources."""
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def module_name(relative: pathlib.Path) -> str:
  """Top-level module name of a file, e.g. ``email`` for ``email/utils.py``."""
  first = relative.parts[0]
  return first[: -len(".py")] if first.endswith(".py") else first


def domain_of(module: str, split_letter: str) -> str:
  """``"old"`` if ``module`` (leading ``_`` stripped) sorts up to the letter."""
  first = module.lstrip("_")[:1].lower()
  return "old" if first <= split_letter else "new"


def list_files(root: pathlib.Path) -> list[pathlib.Path]:
  """The library's ``.py`` files under ``root``, relative and sorted."""
  files = []
  for path in root.rglob("*.py"):
    relative = path.relative_to(root)
    if EXCLUDED_DIRS.intersection(relative.parts[:-1]):
      continue
    if relative.parts[0].startswith("_sysconfigdata") or relative.parts[0].startswith(
      "config-"
    ):
      continue  # Generated per machine: not the same text everywhere.
    files.append(relative)
  return sorted(files, key=lambda p: p.as_posix())


def load_domains(
  split_letter: str = "m", val_mod: int = 10, root: pathlib.Path | None = None
) -> dict[str, Domain]:
  """Reads the standard library and splits it into the two domains.

  Args:
    split_letter: last first letter (``a``..``y``) of the old domain's modules.
    val_mod: a file is a validation file when ``crc32(path) % val_mod == 0``.
    root: the directory to read; defaults to :func:`stdlib_root`.

  Returns:
    ``{"old": Domain, "new": Domain}``.

  Raises:
    ValueError: if ``split_letter`` is not one letter in ``a``..``y``,
      ``val_mod < 2``, or a domain gets no training or validation text.
  """
  if not (
    isinstance(split_letter, str)
    and len(split_letter) == 1
    and "a" <= split_letter <= "y"
  ):
    raise ValueError(
      f"`split_letter` must be one letter in a..y, got {split_letter!r}."
    )
  if val_mod < 2:
    raise ValueError(f"`val_mod` must be >= 2, got {val_mod}.")
  root = stdlib_root() if root is None else root
  parts = {name: {"train": [], "val": [], "modules": set()} for name in ("old", "new")}
  for relative in list_files(root):
    module = module_name(relative)
    part = parts[domain_of(module, split_letter)]
    part["modules"].add(module)
    key = relative.as_posix().encode()
    split = "val" if zlib.crc32(key) % val_mod == 0 else "train"
    part[split].append((root / relative).read_bytes())
  separator = bytes([FILE_SEPARATOR])
  domains = {}
  for name, part in parts.items():
    streams = {}
    for split in ("train", "val"):
      if not part[split]:
        raise ValueError(
          f"The {name} domain has no {split} files under {root} with "
          f"split_letter={split_letter!r}, val_mod={val_mod}."
        )
      streams[split] = np.frombuffer(separator.join(part[split]), dtype=np.uint8).copy()
    digest = hashlib.sha256(streams["train"].tobytes())
    digest.update(streams["val"].tobytes())
    domains[name] = Domain(
      name=name,
      modules=tuple(sorted(part["modules"])),
      train=streams["train"],
      val=streams["val"],
      n_files=(len(part["train"]), len(part["val"])),
      sha256=digest.hexdigest(),
    )
  return domains


def _windows(text: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
  """Windows ``text[s : s + seq_len + 1]`` for each start, int32."""
  offsets = starts[:, None] + np.arange(seq_len + 1)[None, :]
  return text[offsets].astype(np.int32)


def train_batches(
  text: np.ndarray,
  *,
  seed: int,
  stream: int,
  step: int,
  num_batches: int,
  batch_size: int,
  seq_len: int,
  process_index: int = 0,
  process_count: int = 1,
) -> np.ndarray:
  """``num_batches`` batches starting at ``step``, this process's rows only.

  Batch ``step + i`` is drawn from ``np.random.default_rng((seed, stream,
  step + i))``: it does not depend on what was drawn before (resumable, and
  the same for every method that trains on ``stream``).

  Args:
    text: uint8 bytes of a domain's training split.
    seed: the experiment's seed.
    stream: an id of the data stream (0: pre-training, 1: fine-tuning).
    step: index of the first batch.
    num_batches: how many consecutive batches to stack.
    batch_size: global batch size (all processes together).
    seq_len: tokens per example (windows hold ``seq_len + 1`` bytes).
    process_index: this process's index (``jax.process_index()``).
    process_count: number of processes (``jax.process_count()``).

  Returns:
    int32 ``[num_batches, batch_size // process_count, seq_len + 1]``: the
    rows of each global batch that belong to this process.

  Raises:
    ValueError: if ``batch_size`` is not divisible by ``process_count`` or the
      text is shorter than one window.
  """
  if batch_size % process_count:
    raise ValueError(
      f"`batch_size` ({batch_size}) must be divisible by the number of "
      f"processes ({process_count})."
    )
  if len(text) <= seq_len + 1:
    raise ValueError(
      f"`seq_len` ({seq_len}) is too long for a text of {len(text)} bytes."
    )
  local = batch_size // process_count
  rows = slice(process_index * local, (process_index + 1) * local)
  out = []
  for i in range(num_batches):
    rng = np.random.default_rng((seed, stream, step + i))
    starts = rng.integers(0, len(text) - seq_len - 1, size=batch_size)
    out.append(_windows(text, starts[rows], seq_len))
  return np.stack(out)


def eval_windows(text: np.ndarray, *, num: int, seq_len: int) -> np.ndarray:
  """``num`` evenly spaced validation windows of ``seq_len + 1`` bytes.

  Args:
    text: uint8 bytes of a domain's validation split.
    num: number of windows.
    seq_len: tokens per window (a window holds ``seq_len + 1`` bytes).

  Returns:
    int32 ``[num, seq_len + 1]``, the same on every call.

  Raises:
    ValueError: if the text is shorter than one window.
  """
  if len(text) <= seq_len + 1:
    raise ValueError(
      f"`seq_len` ({seq_len}) is too long for a text of {len(text)} bytes."
    )
  starts = np.linspace(0, len(text) - seq_len - 1, num).astype(np.int64)
  return _windows(text, starts, seq_len)
