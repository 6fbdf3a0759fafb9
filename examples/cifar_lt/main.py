r"""Command line of the CIFAR-100-LT held-out-class example (GOODFIT Sec. 4.2).

Run from the repository root::

  # The small CNN on the shared CIFAR-100 subset (CPU, about 10 minutes):
  python -m examples.cifar_lt.main --config cpu
  # Only beta = 10:
  python -m examples.cifar_lt.main --config cpu --set betas=10
  # Paper scale (ResNet-34, full CIFAR-100-LT; a GPU, TFDS downloads the data):
  python -m examples.cifar_lt.main --config paper

``--set FIELD=VALUE`` overrides any field of ``configs/default.py``. Outputs go
to ``--workdir`` (default ``results/cifar_lt``): ``results.json``,
``table.md``, ``tradeoff_beta<b>.png``, and the cached ``stage1/`` (orbax) and
``stage2/`` runs, which later commands reuse.
"""

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any

from examples.cifar_lt import configs, train
from examples.cifar_lt.configs import default
from examples.common import overrides

DEFAULT_WORKDIR = "results/cifar_lt"


def build_parser() -> argparse.ArgumentParser:
  """The argparse parser of the example."""
  parser = argparse.ArgumentParser(
    prog="python -m examples.cifar_lt.main", description=__doc__.split("\n\n")[0]
  )
  parser.add_argument(
    "--config",
    default="cpu",
    choices=configs.CONFIGS,
    help="configuration module in examples/cifar_lt/configs (default cpu)",
  )
  parser.add_argument(
    "--workdir",
    default=DEFAULT_WORKDIR,
    help=f"output folder (default {DEFAULT_WORKDIR})",
  )
  parser.add_argument(
    "--no-progress", action="store_true", help="no tqdm progress bars"
  )
  overrides.add_set_flag(parser)
  return parser


def config_from_args(args: argparse.Namespace) -> default.Config:
  """The selected config with the overrides applied, validated.

  Args:
    args: the parsed flags.

  Returns:
    The config.

  Raises:
    ValueError: naming the field, for a bad value.
  """
  config = overrides.apply_overrides(configs.get_config(args.config), args.overrides)
  if args.no_progress:
    config = dataclasses.replace(config, progress=False)
  default.validate(config)
  return config


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the example and prints the tables beside GOODFIT's Table 2.

  Args:
    argv: command-line arguments without the program name (``sys.argv[1:]``
      when None).

  Returns:
    The results (also written to ``<workdir>/results.json``).
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
  print(
    f"Wrote results.json, table.md and tradeoff_beta*.png to {args.workdir} in "
    f"{time.perf_counter() - start:.0f} s."
  )
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
