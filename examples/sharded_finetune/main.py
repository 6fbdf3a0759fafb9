r"""Command line of the sharded fine-tuning example.

Run from the repository root::

  # 8 simulated CPU devices, a (4 data x 2 model) mesh, a few minutes:
  python -m examples.sharded_finetune.main --quick --host-devices 8
  # the default size, on whatever devices JAX sees (GPUs, TPUs):
  python -m examples.sharded_finetune.main
  # one process per host (SLURM, Cloud TPU, or pass the coordinator):
  python -m examples.sharded_finetune.main --distributed

``--set FIELD=VALUE`` (repeatable) overrides a field of the selected config
(``configs/quick.py`` with ``--quick``, else ``configs/default.py``), e.g.
``--set mesh_shape=2,4 --set adamw_lrs=1e-4,3e-4 --set ft_steps=400``.
Outputs go to ``--workdir`` (default ``results/sharded_finetune``):
``results.json``, ``table.md``, ``tradeoff.png`` and the orbax checkpoints,
from which an interrupted run resumes when started again with the same
configuration.

This module imports JAX only after reading the flags: ``--host-devices``
must set ``XLA_FLAGS`` before JAX starts (the configs do not import JAX).
"""

import argparse
import os
import sys
import time
from collections.abc import Sequence

from examples.common import overrides
from examples.sharded_finetune.configs import default, quick

DEFAULT_WORKDIR = "results/sharded_finetune"
#: Exit code of a process stopped by ``--stop-after-step``.
EXIT_STOPPED = 75


def build_parser() -> argparse.ArgumentParser:
  """The argparse parser of the example."""
  parser = argparse.ArgumentParser(
    prog="python -m examples.sharded_finetune.main",
    description=__doc__.split("\n\n")[0],
  )
  parser.add_argument(
    "--quick", action="store_true", help="the few-minute CPU configuration"
  )
  overrides.add_set_flag(parser)
  parser.add_argument(
    "--workdir", default=DEFAULT_WORKDIR, help="output and checkpoint directory"
  )
  parser.add_argument(
    "--no-progress", action="store_true", help="no tqdm progress bars"
  )
  parser.add_argument(
    "--host-devices",
    type=int,
    default=None,
    metavar="N",
    help="simulate N CPU devices (sets XLA_FLAGS before JAX starts)",
  )
  parser.add_argument(
    "--distributed",
    action="store_true",
    help="call jax.distributed.initialize() (one process per host)",
  )
  parser.add_argument(
    "--coordinator-address",
    default=None,
    help="with --distributed: host:port of process 0 (else auto-detected)",
  )
  parser.add_argument(
    "--num-processes", type=int, default=None, help="with --distributed"
  )
  parser.add_argument("--process-id", type=int, default=None, help="with --distributed")
  parser.add_argument(
    "--start-timeout",
    type=int,
    default=300,
    metavar="S",
    help="with --distributed: seconds for every process to reach the "
    "coordinator, then a clear error instead of a hang",
  )
  parser.add_argument(
    "--cpu-collectives",
    default="gloo",
    help="with --distributed: jax_cpu_collectives_implementation for CPU "
    "devices across processes ('none' leaves JAX's default)",
  )
  parser.add_argument(
    "--stop-after-step",
    type=int,
    default=None,
    metavar="N",
    help="fault injection (tests): every process exits abruptly, with code "
    f"{EXIT_STOPPED}, right after the first checkpoint at batch N or later",
  )
  return parser


def config_from_args(args: argparse.Namespace) -> default.Config:
  """The selected config with the ``--set`` overrides applied and validated.

  Args:
    args: the parsed flags.

  Returns:
    ``configs/quick.py``'s config with ``--quick``, else ``configs/default.py``'s,
    with every ``--set FIELD=VALUE`` applied.

  Raises:
    ValueError: naming the field, for an unknown field, a value that does not
      parse or an invalid configuration.
  """
  config = quick.get_config() if args.quick else default.get_config()
  config = overrides.apply_overrides(config, args.overrides)
  default.validate(config)
  return config


#: XLA_FLAGS set by ``--host-devices``. The simulated devices share the host's
#: cores: on a busy machine a collective can wait longer than XLA's default of
#: 40 s for all device threads to arrive, and XLA then aborts the process.
HOST_DEVICE_FLAGS = (
  "--xla_force_host_platform_device_count={count}",
  "--xla_cpu_collective_call_terminate_timeout_seconds=600",
)


def set_host_devices(count: int) -> None:
  """Makes JAX's CPU backend expose ``count`` devices (before JAX starts).

  Args:
    count: the number of simulated CPU devices.

  Raises:
    RuntimeError: if JAX is already imported.
  """
  if "jax" in sys.modules:
    raise RuntimeError("--host-devices must be applied before JAX is imported.")
  new = [flag.format(count=count) for flag in HOST_DEVICE_FLAGS]
  names = {flag.split("=")[0] for flag in new}
  kept = [
    f for f in os.environ.get("XLA_FLAGS", "").split() if f.split("=")[0] not in names
  ]
  os.environ["XLA_FLAGS"] = " ".join([*kept, *new])


def main(argv: Sequence[str] | None = None) -> dict:
  """Parses flags, starts JAX (and ``jax.distributed``), runs the example.

  Args:
    argv: the command-line arguments (default: ``sys.argv[1:]``).

  Returns:
    The results dict.
  """
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

  from examples.sharded_finetune import distributed

  if args.distributed:
    try:
      distributed.initialize(
        args.coordinator_address,
        args.num_processes,
        args.process_id,
        timeout=args.start_timeout,
        cpu_collectives=None
        if args.cpu_collectives == "none"
        else args.cpu_collectives,
      )
      distributed.check_same_config(
        config,
        {
          "workdir": os.path.abspath(args.workdir),
          "local_devices": jax.local_device_count(),
          "stop_after_step": args.stop_after_step,
        },
        timeout=args.start_timeout,
      )
    except (distributed.DistributedStartError, distributed.ConfigMismatchError) as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      raise SystemExit(distributed.EXIT_START_FAILED) from None
  from examples.sharded_finetune import reporting, train

  started = time.perf_counter()
  results = train.train_and_evaluate(
    config,
    args.workdir,
    show_progress=not args.no_progress,
    stop_after_step=args.stop_after_step,
  )
  if jax.process_index() == 0:
    print(
      f"\nmesh {results['environment']['mesh']} on "
      f"{results['environment']['devices']} {jax.default_backend()} devices"
    )
    print(reporting.format_table(results))
    print(f"wall time {time.perf_counter() - started:.0f} s; results in {args.workdir}")
  return results


if __name__ == "__main__":
  main()
