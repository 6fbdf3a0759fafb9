r"""Command line of the CIFAR-10 -> CIFAR-100 example (paper Sec. 4.2, Table 2).

Run from the repository root::

  # The whole Table 2 row with the small CNN on the shared subsets (CPU):
  python -m examples.cifar.main --config cpu_smoke --sweep \
      --set data_dir=../shared/data/tfds
  # One PROFIT run:
  python -m examples.cifar.main --config cpu_smoke --set optimizer=profit \
      --set lr=1e-3 --set ratio=10 --set data_dir=../shared/data/tfds
  # The compute-matched frontier (every family, three batch sizes), CPU:
  python -m examples.cifar.main --config cpu_frontier --frontier \
      --set data_dir=../shared/data/tfds
  # The paper's ResNet-18 row on a GPU (TFDS downloads the datasets):
  python -m examples.cifar.main --config paper --sweep

``--set FIELD=VALUE`` (repeatable) overrides any field of the selected config
(``examples/cifar/configs/default.py``). Outputs go to ``--workdir`` (default
``results/cifar``): ``results.json``, ``table.md``, ``curves.png`` (or
``frontier.json``, ``frontier.md``, ``frontier.png``) and the
orbax-checkpointed ``pretrain/`` and ``finetune/`` runs, which later commands
reuse or resume.
"""

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any

from examples.cifar import configs, train
from examples.cifar.configs import default
from examples.common import overrides

DEFAULT_WORKDIR = "results/cifar"


def build_parser() -> argparse.ArgumentParser:
  """The argparse parser of the example."""
  parser = argparse.ArgumentParser(
    prog="python -m examples.cifar.main",
    description=__doc__.split("\n\n")[0],
  )
  parser.add_argument(
    "--config",
    default="cpu_smoke",
    choices=configs.CONFIGS,
    help="configuration module in examples/cifar/configs (default cpu_smoke)",
  )
  parser.add_argument(
    "--workdir",
    default=DEFAULT_WORKDIR,
    help=f"output folder (default {DEFAULT_WORKDIR})",
  )
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument(
    "--sweep",
    action="store_true",
    help="run SGD, Adam, Lookahead, Adan and PROFIT over their learning rates "
    "and write Table 2",
  )
  mode.add_argument(
    "--frontier",
    action="store_true",
    help="run every family (full FT, L2-SP, LP-FT, head only, PROFIT, WiSE-FT) "
    "at the same batch budget and write the frontier table",
  )
  parser.add_argument(
    "--no-progress",
    action="store_true",
    help="no tqdm progress bars (the per-epoch lines stay)",
  )
  overrides.add_set_flag(parser)
  return parser


def config_from_args(args: argparse.Namespace) -> default.Config:
  """The selected config with the flags applied.

  Args:
    args: the parsed flags.

  Returns:
    A validated :class:`~examples.cifar.configs.default.Config`.

  Raises:
    ValueError: naming the flag or field, for a bad value.
  """
  config = overrides.apply_overrides(configs.get_config(args.config), args.overrides)
  changes: dict[str, Any] = {}
  if args.sweep:
    changes["sweep"] = True
  if args.frontier:
    changes["frontier"] = True
  if args.no_progress:
    changes["progress"] = False
  config = dataclasses.replace(config, **changes)
  default.validate(config)
  return config


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the example and prints the table.

  Args:
    argv: command-line arguments without the program name (``sys.argv[1:]``
      when None).

  Returns:
    The results dict (also written to ``<workdir>/results.json``, or
    ``frontier.json`` in the frontier mode).
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    config = config_from_args(args)
  except ValueError as error:
    parser.error(str(error))
  start = time.perf_counter()
  results = train.train_and_evaluate(config, args.workdir)
  print()
  print(results["table"])
  print()
  print(results["study_table"] if config.frontier else results["runs_table"])
  print()
  written = (
    "frontier.json, frontier.md and frontier.png"
    if config.frontier
    else "results.json, table.md and curves.png"
  )
  print(f"Wrote {written} to {args.workdir} in {time.perf_counter() - start:.0f} s.")
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
