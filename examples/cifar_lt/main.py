"""Command line of the CIFAR-100-LT held-out-class example (GOODFIT Sec. 4.2)."""

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any

from examples.cifar_lt import configs, train
from examples.cifar_lt.configs import default
from examples.common import overrides


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the example and prints the tables beside GOODFIT's Table 2."""
  parser = argparse.ArgumentParser(
    prog="python -m examples.cifar_lt.main", description=__doc__.split("\n\n")[0]
  )
  add = parser.add_argument
  add("--config", default="cpu", choices=configs.CONFIGS, help="config (default cpu)")
  add("--workdir", default="results/cifar_lt", help="output folder (%(default)s)")
  add("--no-progress", action="store_true", help="no tqdm progress bars")
  overrides.add_set_flag(parser)
  args = parser.parse_args(argv)
  try:
    config = overrides.apply_overrides(configs.get_config(args.config), args.overrides)
    if args.no_progress:
      config = dataclasses.replace(config, progress=False)
    default.validate(config)
  except ValueError as error:
    parser.error(str(error))
  start = time.perf_counter()
  results = train.train_and_evaluate(config, args.workdir)
  print(f"\n{results['table']}\n")
  print(
    f"Wrote results.json, table.md and tradeoff_beta*.png to {args.workdir} in "
    f"{time.perf_counter() - start:.0f} s."
  )
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
