r"""Command line of the toy 2-D regression example (paper Sec. 4.1, Table 1).

Run from the repository root::

  python -m examples.toy_regression.main --quick      # the demo, minutes on a CPU
  python -m examples.toy_regression.main              # paper scale
  python -m examples.toy_regression.main --seeds 0 1 2 3 4 --ratios 10 100 \
      --workdir /tmp/toy

Flags override fields of the selected config (``configs/quick.py`` with
``--quick``, else ``configs/default.py``). Outputs go to ``--workdir``
(default ``results/toy_regression``): ``results.json``, ``table.md``, PNGs and
the cached base models.
"""

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence

from examples.toy_regression import reporting, train
from examples.toy_regression.configs import default, quick

DEFAULT_WORKDIR = "results/toy_regression"

# flag -> (config field, type, nargs, help)
_OVERRIDES = {
  "--seeds": ("seeds", int, "+", "seeds; one whole experiment per seed"),
  "--base-steps": ("base_steps", int, None, "base-training steps (batches)"),
  "--ft-steps": (
    "ft_steps",
    int,
    None,
    "fine-tuning steps (PROFIT: cycles or batches, see --step-convention)",
  ),
  "--batch-size": ("batch_size", int, None, "examples per batch"),
  "--ft-lr": ("ft_lr", float, None, "learning rate of the table's fine-tuning runs"),
  "--n-ref": ("n_ref", int, None, "PROFIT reference steps per cycle"),
  "--ratio": (
    "ratio",
    float,
    None,
    "lambda_main / lambda_ref of the table's PROFIT runs",
  ),
  "--ratios": (
    "sweep_ratios",
    float,
    "*",
    "lambda_main / lambda_ref ratios of PROFIT in the trade-off sweep",
  ),
  "--lrs": ("sweep_lrs", float, "*", "learning rates of full fine-tuning in the sweep"),
  "--profit-lrs": (
    "sweep_profit_lrs",
    float,
    "*",
    "main learning rates of PROFIT in the sweep",
  ),
  "--step-convention": (
    "step_convention",
    str,
    None,
    "what PROFIT's --ft-steps count: cycles, batches (compute-matched) or both",
  ),
  "--storage": (
    "storage",
    str,
    None,
    "PROFIT's storage: delta (default, the accumulated displacement) or copy "
    "(params - theta_ref from a weight copy)",
  ),
  "--delta-dtype": (
    "delta_dtype",
    str,
    None,
    "PROFIT's delta_dtype with --storage delta (default float32, e.g. bfloat16)",
  ),
  "--eval-every": ("eval_every", int, None, "evaluate every this many batches"),
  "--eval-early": (
    "eval_early",
    int,
    None,
    "evaluate every this many batches during the first --eval-every batches",
  ),
  "--n-train": ("n_train", int, None, "training points per domain"),
  "--n-test": ("n_test", int, None, "noise-free test points per domain"),
  "--plot-grid": ("plot_grid", int, None, "pixels per axis of the prediction images"),
}


def build_parser() -> argparse.ArgumentParser:
  """The argparse parser of the example."""
  parser = argparse.ArgumentParser(
    prog="python -m examples.toy_regression.main",
    description=__doc__.split("\n\n")[0],
  )
  parser.add_argument(
    "--quick",
    action="store_true",
    help="use configs/quick.py (the few-minute CPU demo)",
  )
  parser.add_argument(
    "--workdir",
    default=DEFAULT_WORKDIR,
    help=f"output folder (default {DEFAULT_WORKDIR})",
  )
  parser.add_argument(
    "--no-sweep", action="store_true", help="skip the trade-off sweep"
  )
  parser.add_argument(
    "--replot",
    action="store_true",
    help="only redraw the figures of the run saved in --workdir",
  )
  for flag, (field, kind, nargs, text) in _OVERRIDES.items():
    kwargs = {"type": kind, "help": text, "dest": field, "default": None}
    if nargs:
      kwargs["nargs"] = nargs
    if field == "step_convention":
      kwargs["choices"] = default.STEP_CONVENTIONS
    parser.add_argument(flag, **kwargs)
  return parser


def config_from_args(args: argparse.Namespace) -> default.Config:
  """The selected config with the given flags applied.

  Args:
    args: parsed flags.

  Returns:
    A validated :class:`~examples.toy_regression.configs.default.Config`.

  Raises:
    ValueError: naming the flag, for a bad value.
  """
  config = quick.get_config() if args.quick else default.get_config()
  changes = {}
  for field, _, nargs, _ in _OVERRIDES.values():
    value = getattr(args, field)
    if value is not None:
      changes[field] = tuple(value) if nargs else value
  if args.no_sweep:
    changes["sweep"] = False
  config = dataclasses.replace(config, **changes)
  train.validate_config(config)
  return config


def main(argv: Sequence[str] | None = None) -> dict:
  """Runs the example and prints the table.

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
  print()
  print(
    f"Wrote results.json, table.md and {', '.join(results['figures'])} to "
    f"{args.workdir} in {time.perf_counter() - start:.0f} s."
  )
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
