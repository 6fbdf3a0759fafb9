"""Command line of the CIFAR-10 -> CIFAR-100 example (paper Sec. 4.2, Table 2).

E.g. ``python -m examples.cifar.main --config cpu_smoke --sweep --set
data_dir=../shared/data/tfds``; the README lists the commands.
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
_MODES = {
  "--sweep": "run SGD, Adam, Lookahead, Adan and PROFIT over their learning rates "
  "and write Table 2",
  "--frontier": "run every family (full FT, L2-SP, LP-FT, head only, PROFIT, WiSE-FT) "
  "at the same batch budget and write the frontier table",
}


def build_parser() -> argparse.ArgumentParser:
  """The argparse parser of the example."""
  parser = argparse.ArgumentParser(
    prog="python -m examples.cifar.main", description=__doc__.split("\n\n")[0]
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
  for flag, text in _MODES.items():
    mode.add_argument(flag, action="store_true", help=text)
  parser.add_argument(
    "--no-progress",
    action="store_true",
    help="no tqdm progress bars (the per-epoch lines stay)",
  )
  overrides.add_set_flag(parser)
  return parser


def config_from_args(args: argparse.Namespace) -> default.Config:
  """The selected config with the flags applied, validated (``ValueError`` if not)."""
  config = overrides.apply_overrides(configs.get_config(args.config), args.overrides)
  changes: dict[str, Any] = {k: True for k in ("sweep", "frontier") if getattr(args, k)}
  if args.no_progress:
    changes["progress"] = False
  config = dataclasses.replace(config, **changes)
  default.validate(config)
  return config


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the example on ``argv`` (default ``sys.argv[1:]``); prints the tables."""
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    config = config_from_args(args)
  except ValueError as error:
    parser.error(str(error))
  start = time.perf_counter()
  results = train.train_and_evaluate(config, args.workdir)
  second = results["study_table"] if config.frontier else results["runs_table"]
  print(f"\n{results['table']}\n\n{second}\n")
  written = (
    "frontier.json, frontier.md and frontier.png"
    if config.frontier
    else "results.json, table.md and curves.png"
  )
  print(f"Wrote {written} to {args.workdir} in {time.perf_counter() - start:.0f} s.")
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
