"""Byte-level text from the Python standard library, split into two domains.

The stdlib's ``.py`` files are split by top-level module name (see
``configs/default.py``). Batch ``step`` of a stream is drawn from
``np.random.default_rng((seed, stream, step))``: a resumed run sees exactly
the batches of an uninterrupted one, and every method sees the same batches.
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
  """One domain: its modules, uint8 ``train`` and ``val`` bytes (files joined
  by :data:`FILE_SEPARATOR`), ``(train, val)`` file counts, SHA-256 of both."""

  name: str
  modules: tuple[str, ...]
  train: np.ndarray
  val: np.ndarray
  n_files: tuple[int, int]
  sha256: str


def stdlib_root() -> pathlib.Path:
  """The directory of the running Python's standard library sources."""
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def _files(root: pathlib.Path) -> list[pathlib.Path]:
  """The library's ``.py`` files under ``root``, relative and sorted."""
  files = []
  for path in root.rglob("*.py"):
    rel = path.relative_to(root)
    # _sysconfigdata and config-*: generated per machine, not the same text.
    generated = rel.parts[0].startswith(("_sysconfigdata", "config-"))
    if not (generated or EXCLUDED_DIRS.intersection(rel.parts[:-1])):
      files.append(rel)
  return sorted(files, key=lambda p: p.as_posix())


def load_domains(
  split_letter: str = "m", val_mod: int = 10, root: pathlib.Path | None = None
) -> dict[str, Domain]:
  """``{"old": Domain, "new": Domain}`` from the stdlib (or ``root``)."""
  root = stdlib_root() if root is None else root
  parts = {name: {"train": [], "val": [], "modules": set()} for name in ("old", "new")}
  for rel in _files(root):
    module = rel.parts[0].removesuffix(".py")
    part = parts["old" if module.lstrip("_")[:1].lower() <= split_letter else "new"]
    part["modules"].add(module)
    split = "val" if zlib.crc32(rel.as_posix().encode()) % val_mod == 0 else "train"
    part[split].append((root / rel).read_bytes())
  domains = {}
  for name, part in parts.items():
    streams = {}
    for split in ("train", "val"):
      if not part[split]:
        raise ValueError(
          f"The {name} domain has no {split} files under {root} with "
          f"split_letter={split_letter!r}, val_mod={val_mod}."
        )
      text = bytes([FILE_SEPARATOR]).join(part[split])
      streams[split] = np.frombuffer(text, dtype=np.uint8).copy()
    digest = hashlib.sha256(streams["train"].tobytes())
    digest.update(streams["val"].tobytes())
    n_files = (len(part["train"]), len(part["val"]))
    modules = tuple(sorted(part["modules"]))
    domains[name] = Domain(
      name, modules, *streams.values(), n_files, digest.hexdigest()
    )
  return domains


def _check_length(text: np.ndarray, seq_len: int) -> None:
  if len(text) <= seq_len + 1:
    raise ValueError(
      f"`seq_len` ({seq_len}) is too long for a text of {len(text)} bytes."
    )


def _windows(text: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
  """Windows ``text[s : s + seq_len + 1]`` for each start, int32."""
  offsets = starts[:, None] + np.arange(seq_len + 1)[None, :]
  return text[offsets].astype(np.int32)


def train_batches(
  text: np.ndarray, config, stream: int, step: int, num: int, index=0, count=1
) -> np.ndarray:
  """Batches ``step .. step + num - 1`` of ``stream``, rows of process ``index``.

  Returns int32 ``[num, config.batch_size // count, config.seq_len + 1]``.
  """
  batch_size, seq_len = config.batch_size, config.seq_len
  if batch_size % count:
    raise ValueError(
      f"`batch_size` ({batch_size}) must be divisible by the number of "
      f"processes ({count})."
    )
  _check_length(text, seq_len)
  rows = slice(index * batch_size // count, (index + 1) * batch_size // count)
  out = []
  for i in range(num):
    rng = np.random.default_rng((config.seed, stream, step + i))
    starts = rng.integers(0, len(text) - seq_len - 1, size=batch_size)
    out.append(_windows(text, starts[rows], seq_len))
  return np.stack(out)


def eval_windows(text: np.ndarray, num: int, seq_len: int) -> np.ndarray:
  """``num`` evenly spaced validation windows, int32 ``[num, seq_len + 1]``."""
  _check_length(text, seq_len)
  starts = np.linspace(0, len(text) - seq_len - 1, num).astype(np.int64)
  return _windows(text, starts, seq_len)
