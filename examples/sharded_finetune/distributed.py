"""Starting ``jax.distributed`` with clear errors instead of hangs or aborts.

One JAX process runs per host (or per GPU); process 0 hosts the coordinator.
:func:`initialize` wraps ``jax.distributed.initialize`` so that the two usual
start-up faults end, within ``timeout`` seconds, with an error that says what
went wrong:

* a process that cannot reach the coordinator (wrong address, process 0 not
  started, a firewall): JAX would abort the process from C++ with a
  ``DEADLINE_EXCEEDED`` after ``initialization_timeout``; here the
  coordinator's port is probed first and a :class:`DistributedStartError`
  names the address;
* process 0 waiting for processes that never connect: a watchdog reports it
  and ends the process (exit code :data:`EXIT_START_FAILED`).

:func:`check_same_config` then compares a digest of the configuration across
processes through the coordinator's key-value store (no compilation, no
collective), so that processes started with different flags stop with
:class:`ConfigMismatchError` before they would wait on each other forever.

On CPU (simulated devices, tests) the cross-process collectives need gloo:
``jax_cpu_collectives_implementation`` is set before the backend starts.
"""

import hashlib
import json
import os
import socket
import sys
import threading
import time
from typing import Any

import jax

#: Exit code of a process whose distributed start failed (timeout, no coordinator).
EXIT_START_FAILED = 3


class DistributedStartError(RuntimeError):
  """A process could not join the distributed job in time."""


class ConfigMismatchError(RuntimeError):
  """The processes of a job were started with different configurations."""


def _probe(address: str, deadline: float, process_id: int) -> None:
  """Waits until a TCP connection to ``address`` succeeds, or raises."""
  host, _, port = address.rpartition(":")
  last: Exception | None = None
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
        return
    except OSError as e:
      last = e
    if time.monotonic() >= deadline:
      raise DistributedStartError(
        f"process {process_id} could not reach the coordinator at {address} "
        f"({last}); is process 0 running there, and is the port reachable "
        "from this host?"
      )
    time.sleep(0.2)


def initialize(
  coordinator_address: str | None,
  num_processes: int | None,
  process_id: int | None,
  *,
  timeout: int = 300,
  cpu_collectives: str | None = "gloo",
) -> None:
  """``jax.distributed.initialize`` that fails clearly within ``timeout`` s.

  Args:
    coordinator_address: ``host:port`` of process 0's coordinator; ``None``
      auto-detects (SLURM, Open MPI, Cloud TPU), as JAX does.
    num_processes: number of processes (``None``: auto-detected).
    process_id: this process's index (``None``: auto-detected).
    timeout: seconds to wait for the coordinator and for all processes.
    cpu_collectives: ``jax_cpu_collectives_implementation`` to set (``"gloo"``
      for CPU devices across processes; ``None`` leaves it alone). It has no
      effect on GPU or TPU devices.

  Raises:
    DistributedStartError: if this process (not process 0) cannot reach the
      coordinator within ``timeout`` seconds. Process 0 waiting for the others
      prints the error and exits with :data:`EXIT_START_FAILED` instead (JAX
      would abort it from C++).
  """
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  deadline = time.monotonic() + timeout
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if address and process_id not in (None, 0):
    _probe(address, deadline, process_id)

  def expire() -> None:
    print(
      f"error: process {process_id}: the distributed job did not start within "
      f"{timeout} s: not every one of the {num_processes} processes connected "
      f"to the coordinator at {address} (a process that was not started, or "
      "one started with another --num-processes or --coordinator-address).",
      file=sys.stderr,
      flush=True,
    )
    os._exit(EXIT_START_FAILED)

  watchdog = threading.Timer(timeout, expire)
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      # JAX's own deadline comes later than the watchdog's, so that the
      # watchdog's message, not an abort, ends the process.
      initialization_timeout=timeout + 30,
      shutdown_timeout_seconds=max(timeout, 10),
    )
  finally:
    watchdog.cancel()


def config_digest(config: Any) -> str:
  """A SHA-256 digest of a (dataclass or JSON-serialisable) configuration."""
  payload = getattr(config, "__dict__", config)
  return hashlib.sha256(
    json.dumps(payload, sort_keys=True, default=str).encode()
  ).hexdigest()


def check_same_config(config: Any, extra: dict[str, Any], timeout: int = 60) -> None:
  """Raises :class:`ConfigMismatchError` unless every process has ``config``.

  Every process publishes the digest of ``config`` and ``extra`` (e.g. the
  devices per process, the workdir) in the coordinator's key-value store and
  compares it with every other process's. A no-op with one process.

  Args:
    config: this process's configuration.
    extra: further settings that must agree (JSON-serialisable).
    timeout: seconds to wait for the other processes' digests.

  Raises:
    ConfigMismatchError: naming the processes that differ, on every process.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed

  client = jax_distributed.global_state.client
  mine = {"config": config_digest(config), **extra}
  client.key_value_set(
    f"sharded_finetune/config/{jax.process_index()}", json.dumps(mine)
  )
  differ = []
  for i in range(jax.process_count()):
    theirs = json.loads(
      client.blocking_key_value_get(f"sharded_finetune/config/{i}", timeout * 1000)
    )
    if theirs != mine:
      fields = sorted(k for k in mine if theirs.get(k) != mine[k])
      differ.append(f"{', '.join(fields)} of process {i}")
  if differ:
    raise ConfigMismatchError(
      f"process {jax.process_index()}: the processes of this job were started "
      f"with different settings ({'; '.join(differ)} differ from this "
      "process's). Start every process with the same flags."
    )
