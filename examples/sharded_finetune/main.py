r"""Command line of the sharded fine-tuning example.

Run from the repository root::

  # 8 simulated CPU devices, a (4 data x 2 model) mesh, a few minutes:
  python -m examples.sharded_finetune.main --quick --host-devices 8
  # the default size, on whatever devices JAX sees (GPUs, TPUs):
  python -m examples.sharded_finetune.main
  # one process per host (SLURM, Cloud TPU, or pass the coordinator):
  python -m examples.sharded_finetune.main --distributed

Flags override fields of the selected config (``configs/quick.py`` with
``--quick``, else ``configs/default.py``). Outputs go to ``--workdir``
(default ``results/sharded_finetune``): ``results.json``, ``table.md``,
``tradeoff.png`` and the orbax checkpoints, from which an interrupted run
resumes when started again with the same flags.

This module imports JAX only after reading the flags: ``--host-devices``
must set ``XLA_FLAGS`` before JAX starts.
"""

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence

DEFAULT_WORKDIR = "results/sharded_finetune"

# flag -> (config field, type, nargs, help)
_OVERRIDES = {
  "--seed": ("seed", int, None, "data order and initialisation seed"),
  "--split-letter": (
    "split_letter",
    str,
    None,
    "modules starting with a..LETTER are the old domain, the rest the new",
  ),
  "--seq-len": ("seq_len", int, None, "bytes per training window"),
  "--batch-size": ("batch_size", int, None, "global batch size"),
  "--eval-windows": ("eval_windows", int, None, "validation windows per domain"),
  "--d-model": ("d_model", int, None, "model width"),
  "--num-layers": ("num_layers", int, None, "transformer blocks"),
  "--num-heads": ("num_heads", int, None, "attention heads"),
  "--d-ff": ("d_ff", int, None, "MLP hidden width"),
  "--mesh-shape": (
    "mesh_shape",
    int,
    2,
    "DATA MODEL mesh sizes (0 0: automatic; -1 infers one)",
  ),
  "--pretrain-steps": ("pretrain_steps", int, None, "pre-training batches"),
  "--pretrain-lr": ("pretrain_lr", float, None, "peak pre-training learning rate"),
  "--weight-decay": ("weight_decay", float, None, "AdamW weight decay"),
  "--ft-steps": ("ft_steps", int, None, "fine-tuning batches, every method"),
  "--adamw-lrs": ("adamw_lrs", float, "*", "AdamW fine-tuning learning rates"),
  "--profit-lrs": ("profit_lrs", float, "*", "PROFIT main learning rates"),
  "--profit-ratio": ("profit_ratio", float, None, "PROFIT lr_main / lr_ref"),
  "--n-ref": ("n_ref", int, None, "PROFIT reference steps per cycle"),
  "--eval-every": ("eval_every", int, None, "evaluate every this many batches"),
  "--checkpoint-every": (
    "checkpoint_every",
    int,
    None,
    "save a checkpoint every this many batches",
  ),
}


def build_parser() -> argparse.ArgumentParser:
  """The argparse parser of the example."""
  parser = argparse.ArgumentParser(
    prog="python -m examples.sharded_finetune.main",
    description=__doc__.split("\n\n")[0],
  )
  parser.add_argument(
    "--quick", action="store_true", help="the few-minute CPU configuration"
  )
  parser.add_argument(
    "--workdir", default=DEFAULT_WORKDIR, help="output and checkpoint directory"
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
  for flag, (_, type_, nargs, help_) in _OVERRIDES.items():
    parser.add_argument(flag, type=type_, nargs=nargs, default=None, help=help_)
  return parser


def config_from_args(args: argparse.Namespace):
  """The selected config with the flags' overrides applied."""
  from examples.sharded_finetune.configs import default, quick

  config = quick.get_config() if args.quick else default.get_config()
  overrides = {}
  for flag, (field, _, nargs, _) in _OVERRIDES.items():
    value = getattr(args, flag[2:].replace("-", "_"))
    if value is not None:
      overrides[field] = tuple(value) if nargs is not None else value
  return dataclasses.replace(config, **overrides)


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
  config = config_from_args(args)

  import jax

  if args.distributed:
    jax.distributed.initialize(
      coordinator_address=args.coordinator_address,
      num_processes=args.num_processes,
      process_id=args.process_id,
    )
  from examples.sharded_finetune import train

  try:
    train.validate_config(config)
  except ValueError as e:
    parser.error(str(e))
  started = time.perf_counter()
  results = train.train_and_evaluate(config, args.workdir)
  if jax.process_index() == 0:
    print(
      f"\nmesh {results['environment']['mesh']} on "
      f"{results['environment']['devices']} {jax.default_backend()} devices"
    )
    print(train.format_table(results))
    print(f"wall time {time.perf_counter() - started:.0f} s; results in {args.workdir}")
  return results


if __name__ == "__main__":
  main()
