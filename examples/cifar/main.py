r"""Command line of the CIFAR-10 -> CIFAR-100 example (paper Sec. 4.2, Table 2).

Run from the repository root::

  # The whole Table 2 row with the small CNN on the shared subsets (CPU):
  python -m examples.cifar.main --config cpu_smoke --sweep \
      --data-dir ../shared/data/tfds
  # One PROFIT run:
  python -m examples.cifar.main --config cpu_smoke --optimizer profit --lr 1e-3 \
      --ratio 10 --n-ref 1 --data-dir ../shared/data/tfds
  # The paper's ResNet-18 row on a GPU (TFDS downloads the datasets):
  python -m examples.cifar.main --config paper --sweep

Flags override fields of the selected config (``examples/cifar/configs``);
``--set FIELD=VALUE`` overrides any other field. Outputs go to ``--workdir``
(default ``results/cifar``): ``results.json``, ``table.md``, ``curves.png``
and the orbax-checkpointed ``pretrain/`` and ``finetune/`` runs, which later
commands reuse or resume.
"""

import argparse
import dataclasses
import sys
import time
import types
import typing
from collections.abc import Sequence
from typing import Any

from examples.cifar import configs, train
from examples.cifar.configs import default

DEFAULT_WORKDIR = "results/cifar"

# flag -> (config field, type, help)
_OVERRIDES = {
    "--model": ("model", str, "backbone: cnn, resnet18, vit_tiny, vit_small"),
    "--optimizer": ("optimizer", str,
                    "fine-tuning optimizer of a single run: sgd, adam, "
                    "lookahead, adan, profit"),
    "--lr": ("lr", float, "learning rate of a single run (PROFIT: of its Adam)"),
    "--n-ref": ("n_ref", int, "PROFIT reference steps per cycle"),
    "--ratio": ("ratio", float, "PROFIT lambda_main / lambda_ref (ref = lr / ratio)"),
    "--warmup-epochs": ("warmup_epochs", int,
                        "plain Adam epochs before PROFIT starts (warmup_steps)"),
    "--epochs": ("epochs", int, "fine-tuning epochs (passes over CIFAR-100); "
                 "with --sweep, for every optimizer"),
    "--pretrain-epochs": ("pretrain_epochs", int, "CIFAR-10 pre-training epochs"),
    "--batch-size": ("batch_size", int, "examples per batch"),
    "--seed": ("seed", int, "seed of init, data order and augmentation"),
    "--data-dir": ("data_dir", str, "TFDS data directory (default: TFDS's)"),
}


def build_parser() -> argparse.ArgumentParser:
  """The argparse parser of the example."""
  parser = argparse.ArgumentParser(
      prog="python -m examples.cifar.main",
      description=__doc__.split("\n\n")[0],
  )
  parser.add_argument("--config", default="cpu_smoke", choices=configs.CONFIGS,
                      help="configuration module in examples/cifar/configs "
                           "(default cpu_smoke)")
  parser.add_argument("--workdir", default=DEFAULT_WORKDIR,
                      help=f"output folder (default {DEFAULT_WORKDIR})")
  parser.add_argument("--sweep", action="store_true",
                      help="run SGD, Adam, Lookahead, Adan and PROFIT over "
                           "their learning rates and write Table 2")
  parser.add_argument("--head-only", action="store_true", default=None,
                      help="fine-tune the CIFAR-100 head only")
  parser.add_argument("--lrs", type=float, nargs="+", default=None,
                      help="learning-rate grid of every optimizer in --sweep")
  parser.add_argument("--optimizers", nargs="+", default=None,
                      choices=default.OPTIMIZERS, help="optimizers of --sweep")
  parser.add_argument("--no-progress", action="store_true",
                      help="no tqdm progress bars (the per-epoch lines stay)")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="override any config field (repeatable), e.g. "
                           "--set train_examples=2000")
  for flag, (field, kind, text) in _OVERRIDES.items():
    parser.add_argument(flag, type=kind, dest=field, default=None, help=text)
  return parser


def _parse_value(field: dataclasses.Field, text: str) -> Any:
  """Parses ``text`` as the type of ``field`` (scalars and None)."""
  kind = field.type
  if isinstance(kind, str):
    kind = eval(kind, vars(default))  # pylint: disable=eval-used
  options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
  if text.lower() == "none" and type(None) in options:
    return None
  kind = next(k for k in options if k is not type(None))
  if kind is bool:
    if text.lower() in ("1", "true", "yes"):
      return True
    if text.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"expected true/false, got {text!r}")
  if kind in (int, float, str):
    return kind(text)
  raise ValueError(f"field {field.name!r} cannot be set from the command line")


def config_from_args(args: argparse.Namespace) -> default.Config:
  """The selected config with the flags applied.

  Args:
    args: the parsed flags.

  Returns:
    A validated :class:`~examples.cifar.configs.default.Config`.

  Raises:
    ValueError: naming the flag or field, for a bad value.
  """
  config = configs.get_config(args.config)
  fields = {f.name: f for f in dataclasses.fields(config)}
  changes: dict[str, Any] = {}
  for item in args.set:
    name, sep, text = item.partition("=")
    if not sep or name not in fields:
      raise ValueError(
          f"--set expects FIELD=VALUE with FIELD a config field, got {item!r}."
      )
    try:
      changes[name] = _parse_value(fields[name], text)
    except ValueError as error:
      raise ValueError(f"--set {name}: {error}") from None
  for field, _, _ in _OVERRIDES.values():
    value = getattr(args, field)
    if value is not None:
      changes[field] = value
  if args.epochs is not None:
    changes["sweep_epochs"] = ()  # --epochs applies to every optimizer.
  if args.sweep:
    changes["sweep"] = True
  if args.head_only:
    changes["head_only"] = True
  if args.no_progress:
    changes["progress"] = False
  if args.optimizers:
    changes["sweep_optimizers"] = tuple(args.optimizers)
  if args.lrs:
    changes["sweep_lrs"] = tuple((name, tuple(args.lrs)) for name in default.OPTIMIZERS)
  config = dataclasses.replace(config, **changes)
  default.validate(config)
  return config


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the example and prints the table.

  Args:
    argv: command-line arguments without the program name (``sys.argv[1:]``
      when None).

  Returns:
    The results dict (also written to ``<workdir>/results.json``).
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
  print(results["runs_table"])
  print()
  print(f"Wrote results.json, table.md and curves.png to {args.workdir} in "
        f"{time.perf_counter() - start:.0f} s.")
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
