"""Command line of the sharded fine-tuning example, and its distributed start.

``python -m examples.sharded_finetune.main --quick --host-devices 8``, see the
README. JAX is imported only after the flags are read (``--host-devices`` sets
``XLA_FLAGS`` before JAX starts). ``--distributed`` ends the usual start-up
faults within ``--start-timeout`` with a clear error, not a hang or an abort:
an unreachable coordinator, peers that never come, different flags.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence

from examples.common import overrides
from examples.sharded_finetune.configs import default, quick

DEFAULT_WORKDIR = "results/sharded_finetune"
#: Exit code of a process stopped by ``--stop-after-step``.
EXIT_STOPPED = 75
#: Exit code of a process whose distributed start failed.
EXIT_START_FAILED = 3
#: XLA_FLAGS of ``--host-devices``. The simulated devices share the host's
#: cores: on a busy machine a collective can wait longer than XLA's default of
#: 40 s for all device threads to arrive, and XLA then aborts the process.
HOST_DEVICE_FLAGS = (
  "--xla_force_host_platform_device_count={count}",
  "--xla_cpu_collective_call_terminate_timeout_seconds=600",
)


class DistributedStartError(RuntimeError):
  """A process could not join the distributed job, or joined with other flags."""


def build_parser() -> argparse.ArgumentParser:
  """The argparse parser of the example."""
  parser = argparse.ArgumentParser(
    prog="python -m examples.sharded_finetune.main",
    description=__doc__.split("\n\n")[0],
  )
  add = parser.add_argument
  add("--quick", action="store_true", help="the few-minute CPU configuration")
  overrides.add_set_flag(parser)
  add("--workdir", default=DEFAULT_WORKDIR, help="output and checkpoint directory")
  add("--no-progress", action="store_true", help="no tqdm progress bars")
  add("--host-devices", type=int, metavar="N", help="simulate N CPU devices")
  add("--distributed", action="store_true", help="call jax.distributed.initialize()")
  add("--coordinator-address", help="host:port of process 0 (else auto-detected)")
  add("--num-processes", type=int, help="with --distributed")
  add("--process-id", type=int, help="with --distributed")
  add("--start-timeout", type=int, default=300, help="seconds to join, then an error")
  add("--cpu-collectives", default="gloo", help="across processes ('none': JAX's)")
  stop = f"fault injection: exit ({EXIT_STOPPED}) after a checkpoint at batch >= N"
  add("--stop-after-step", type=int, metavar="N", help=stop)
  return parser


def config_from_args(args: argparse.Namespace) -> default.Config:
  """The selected config with the ``--set`` overrides applied, validated."""
  config = quick.get_config() if args.quick else default.get_config()
  config = overrides.apply_overrides(config, args.overrides)
  default.validate(config)
  return config


def set_host_devices(count: int) -> None:
  """Makes JAX's CPU backend expose ``count`` devices (before JAX starts)."""
  if "jax" in sys.modules:
    raise RuntimeError("--host-devices must be applied before JAX is imported.")
  new = [flag.format(count=count) for flag in HOST_DEVICE_FLAGS]
  names = {flag.split("=")[0] for flag in new}
  old = os.environ.get("XLA_FLAGS", "").split()
  kept = [f for f in old if f.split("=")[0] not in names]
  os.environ["XLA_FLAGS"] = " ".join([*kept, *new])


def start_distributed(config: default.Config, args: argparse.Namespace) -> None:
  """``jax.distributed.initialize``, failing clearly within ``--start-timeout``:
  the coordinator's port is probed, a watchdog ends process 0 if peers never
  come (JAX would abort it from C++), then the processes compare their settings
  through the coordinator's key-value store (no compilation, no collective)."""
  import jax
  from jax._src import distributed as jax_distributed

  timeout, process_id = args.start_timeout, args.process_id
  if args.cpu_collectives not in ("", "none"):  # gloo: CPU devices across processes.
    jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
  address = args.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  deadline = time.monotonic() + timeout
  while address and process_id not in (None, 0):  # Probe the coordinator's port.
    host, _, port = address.rpartition(":")
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
        break
    except OSError as e:
      if time.monotonic() >= deadline:
        raise DistributedStartError(
          f"process {process_id} could not reach the coordinator at {address} "
          f"({e}); is process 0 running there, and is the port reachable "
          "from this host?"
        ) from None
    time.sleep(0.2)

  def expire() -> None:
    print(
      f"error: process {process_id}: the distributed job did not start within "
      f"{timeout} s: not every one of the {args.num_processes} processes connected "
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
      *(args.coordinator_address, args.num_processes, process_id),
      # Later than the watchdog, so that its message, not an abort, ends it.
      initialization_timeout=timeout + 30,
      shutdown_timeout_seconds=max(timeout, 10),
    )
  finally:
    watchdog.cancel()
  if jax.process_count() == 1:
    return
  # examples.common.runs.digest, written out: importing that module imports
  # orbax and so JAX, which must come after --host-devices is applied.
  text = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
  mine = {
    "config": hashlib.sha256(text.encode()).hexdigest(),
    "workdir": os.path.abspath(args.workdir),
    "local_devices": jax.local_device_count(),
    "stop_after_step": args.stop_after_step,
  }
  client, key = jax_distributed.global_state.client, "sharded_finetune/config/{}"
  client.key_value_set(key.format(jax.process_index()), json.dumps(mine))
  differ = []
  for i in range(jax.process_count()):
    theirs = json.loads(client.blocking_key_value_get(key.format(i), timeout * 1000))
    if theirs != mine:
      fields = sorted(k for k in mine if theirs.get(k) != mine[k])
      differ.append(f"{', '.join(fields)} of process {i}")
  if differ:
    raise DistributedStartError(
      f"process {jax.process_index()}: the processes of this job were started "
      f"with different settings ({'; '.join(differ)} differ from this "
      "process's). Start every process with the same flags."
    )


def main(argv: Sequence[str] | None = None) -> dict:
  """Parses flags, starts JAX (and ``jax.distributed``), runs the example."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.host_devices is not None:
    if args.host_devices < 1:
      parser.error(f"--host-devices must be >= 1, got {args.host_devices}.")
    set_host_devices(args.host_devices)
  try:
    config = config_from_args(args)
  except ValueError as e:
    parser.error(str(e))

  import jax

  if args.distributed:
    try:
      start_distributed(config, args)
    except DistributedStartError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      raise SystemExit(EXIT_START_FAILED) from None
  from examples.sharded_finetune import reporting, train

  started = time.perf_counter()
  results = train.train_and_evaluate(
    config, args.workdir, not args.no_progress, args.stop_after_step
  )
  if jax.process_index() == 0:
    env, backend = results["environment"], jax.default_backend()
    print(f"\nmesh {env['mesh']} on {env['devices']} {backend} devices")
    print(reporting.format_table(results))
    print(f"wall time {time.perf_counter() - started:.0f} s; results in {args.workdir}")
  return results


if __name__ == "__main__":
  main()
