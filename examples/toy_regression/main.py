"""Command line of the toy 2-D regression example (paper Sec. 4.1, Table 1)."""

import argparse
import dataclasses
import importlib
import sys
import time
from collections.abc import Sequence

from examples.common import overrides
from examples.toy_regression import reporting, train
from examples.toy_regression.configs import default


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m examples.toy_regression.main", description=__doc__.split("\n\n")[0]
  )
  about = "configs/<name>.py: default (paper scale), quick (the few-minute CPU demo) "
  about += "or study (the frontier at three batch sizes)"
  parser.add_argument("--config", choices=("default", "quick", "study"), help=about)
  for flag, text in (
    ("--quick", "same as --config quick"),
    ("--no-sweep", "only the table's runs (--set sweep=false)"),
    ("--replot", "only redraw the figures of the run saved in --workdir"),
  ):
    parser.add_argument(flag, action="store_true", help=text)
  workdir = "results/toy_regression"
  parser.add_argument("--workdir", default=workdir, help=f"output folder ({workdir})")
  overrides.add_set_flag(parser)
  return parser


def config_from_args(args: argparse.Namespace) -> default.Config:
  """The selected, validated config; ``ValueError`` names a bad field or flag."""
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
  """Runs the example, prints its tables and returns the results dict."""
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
  parts = [reporting.format_table, reporting.format_sweep, reporting.format_frontier]
  if results["diagnostics"]:
    parts.append(reporting.markdown_diagnostics)
  for part in parts:
    print(f"\n{part(results)}")
  figures = ", ".join(results["figures"])
  where = f"{args.workdir} in {time.perf_counter() - start:.0f} s"
  print(f"\nWrote results.json, table.md and {figures} to {where}.")
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
