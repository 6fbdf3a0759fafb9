r"""Command line of the toy 2-D regression example (paper Sec. 4.1, Table 1).

Run from the repository root::

  python -m examples.toy_regression.main --quick        # the demo, minutes on a CPU
  python -m examples.toy_regression.main --config study # frontier at 3 batch sizes
  python -m examples.toy_regression.main                # paper scale
  python -m examples.toy_regression.main --quick --set seeds=0,1,2,3 \
      --set sweep_ratios=10,100 --workdir /tmp/toy

``--set FIELD=VALUE`` overrides any field of the selected config
(``configs/<name>.py``; ``--quick`` is ``--config quick``). Outputs go to
``--workdir`` (default ``results/toy_regression``): ``results.json``,
``table.md``, PNGs, the cached base models and the finished runs, which a
later command with the same settings reuses.
"""

import argparse
import dataclasses
import importlib
import sys
import time
from collections.abc import Sequence

from examples.common import overrides
from examples.toy_regression import reporting, train
from examples.toy_regression.configs import default

DEFAULT_WORKDIR = "results/toy_regression"
CONFIGS = ("default", "quick", "study")


def build_parser() -> argparse.ArgumentParser:
  """The argparse parser of the example."""
  parser = argparse.ArgumentParser(
    prog="python -m examples.toy_regression.main",
    description=__doc__.split("\n\n")[0],
  )
  parser.add_argument(
    "--config",
    choices=CONFIGS,
    default=None,
    help="configs/<name>.py: default (paper scale), quick (the few-minute CPU "
    "demo) or study (the frontier at three batch sizes)",
  )
  parser.add_argument("--quick", action="store_true", help="same as --config quick")
  parser.add_argument(
    "--workdir",
    default=DEFAULT_WORKDIR,
    help=f"output folder (default {DEFAULT_WORKDIR})",
  )
  parser.add_argument(
    "--no-sweep", action="store_true", help="only the table's runs (--set sweep=false)"
  )
  parser.add_argument(
    "--replot",
    action="store_true",
    help="only redraw the figures of the run saved in --workdir",
  )
  overrides.add_set_flag(parser)
  return parser


def config_from_args(args: argparse.Namespace) -> default.Config:
  """The selected config with the given overrides applied.

  Args:
    args: parsed flags.

  Returns:
    A validated :class:`~examples.toy_regression.configs.default.Config`.

  Raises:
    ValueError: naming the field, for a bad value or conflicting flags.
  """
  if args.quick and args.config not in (None, "quick"):
    raise ValueError(f"--quick contradicts --config {args.config}.")
  name = "quick" if args.quick else args.config or "default"
  module = importlib.import_module(f"examples.toy_regression.configs.{name}")
  config = overrides.apply_overrides(module.get_config(), args.overrides)
  if args.no_sweep:
    config = dataclasses.replace(config, sweep=False)
  default.validate(config)
  return config


def main(argv: Sequence[str] | None = None) -> dict:
  """Runs the example and prints the table, the frontier and PROFIT's diagnostics.

  Args:
    argv: command-line arguments without the program name (``sys.argv[1:]``
      when None).

  Returns:
    The results dict (also written to ``<workdir>/results.json``).
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.replot:
    results = train.replot(args.workdir)
    print(reporting.format_table(results))
    print(f"Redrew {', '.join(results['figures'])} in {args.workdir}.")
    return results
  try:
    config = config_from_args(args)
  except ValueError as error:
    parser.error(str(error))
  start = time.perf_counter()
  results = train.train_and_evaluate(config, args.workdir)
  print()
  print(reporting.format_table(results))
  print()
  print(reporting.format_sweep(results))
  print()
  print(reporting.format_frontier(results))
  if results["diagnostics"]:
    print()
    print(reporting.markdown_diagnostics(results))
  print()
  print(
    f"Wrote results.json, table.md and {', '.join(results['figures'])} to "
    f"{args.workdir} in {time.perf_counter() - start:.0f} s."
  )
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
