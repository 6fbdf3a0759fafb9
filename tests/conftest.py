"""Session set-up shared by every test module.

One JAX compilation cache for the whole test session. Many tests compile the
same XLA computation again: an eager ``tx.update`` call compiles its
``lax.while_loop``s (``run_if``) afresh on every call, the examples build a new
jitted step for every run, and the subprocesses (the 8-device sharding worker,
the recipes, the notebooks' kernels, the docs build) start with no compiled
code at all. With a persistent cache (``jax_compilation_cache_dir``) an
identical computation is compiled once and then loaded: the executable is the
one XLA compiled for the same HLO, options and backend, so results are the
same, only the compile time goes. The cache lives in a fresh temporary folder
per session (set through the environment, so subprocesses share it), and is
removed at the end; nothing carries over between sessions. A
``JAX_COMPILATION_CACHE_DIR`` already set is used as it is (and kept).
"""

import os
import shutil
import tempfile

import pytest

_OWN_CACHE = None
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  _OWN_CACHE = tempfile.mkdtemp(prefix="optax-profit-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
  # Cache every computation, however small or quick to compile.
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # noqa: E402  (after the environment it reads)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
  "jax_persistent_cache_min_compile_time_secs",
  float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")),
)
jax.config.update(
  "jax_persistent_cache_min_entry_size_bytes",
  int(os.environ.get("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")),
)


def pytest_unconfigure(config):
  if _OWN_CACHE is not None:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture
def x64():
  """Runs the test with float64 enabled (``jax.enable_x64``)."""
  with jax.enable_x64(True):
    yield
