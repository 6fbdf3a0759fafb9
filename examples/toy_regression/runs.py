"""Run naming, the cached base models and resumable fine-tuning runs.

A :class:`RunSpec` names one fine-tuning setting. Base models are cached with
orbax under ``<workdir>/base_models/seed<k>-<hash>/``, keyed by everything
base training depends on; every finished fine-tuning run (one setting, one
seed) is saved as JSON under ``<workdir>/runs/<hash>/<name>/seed<k>.json``,
keyed by everything fine-tuning depends on, so an interrupted or extended
sweep reruns only what is missing.
"""

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from examples.common.runs import digest
from examples.toy_regression.configs import default

Config = default.Config
Params = Any

#: Bump when base training changes in a way the config does not show.
BASE_CACHE_VERSION = 1
#: Bump when a fine-tuning run's record changes in a way the config does not show.
RUN_CACHE_VERSION = 1
METHODS = ("full", "head", "l2sp", "profit")

#: Config fields the base model depends on.
BASE_FIELDS = (
  "n_train",
  "noise_std",
  "old_domain",
  "hidden",
  "batch_size",
  "rmsprop_decay",
  "rmsprop_eps",
  "base_steps",
  "base_lr",
  "base_decay_every",
  "base_decay_rate",
)
#: Config fields a fine-tuning run depends on beyond its base model and spec.
FINETUNE_FIELDS = (
  "n_test",
  "n_val",
  "new_domain",
  "ft_steps",
  "ft_decay_every",
  "ft_decay_rate",
  "n_ref",
  "storage",
  "delta_dtype",
  "eval_every",
  "eval_early",
  "wise_points",
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One fine-tuning setting.

  Attributes:
    method: ``"full"``, ``"head"``, ``"l2sp"`` or ``"profit"``.
    lr: learning rate (PROFIT: of the main optimizer).
    batch_size: fine-tuning batch size.
    ratio: PROFIT's ``lambda_main / lambda_ref`` (None otherwise).
    convention: PROFIT's step convention, ``"cycles"`` or ``"batches"``.
    alpha: L2-SP's penalty weight (None otherwise).
  """

  method: str
  lr: float
  batch_size: int
  ratio: float | None = None
  convention: str | None = None
  alpha: float | None = None

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"`method` must be one of {METHODS}, got {self.method!r}.")
    if (self.method == "profit") != (self.ratio is not None):
      raise ValueError(f"`ratio` is PROFIT's only, got {self.ratio!r} for {self}.")
    if (self.method == "l2sp") != (self.alpha is not None):
      raise ValueError(f"`alpha` is L2-SP's only, got {self.alpha!r} for {self}.")

  @property
  def name(self) -> str:
    """A unique, readable name, e.g. ``profit_lr5e-04_ratio100_batches_bs128``."""
    lr = np.format_float_scientific(self.lr, trim="-")  # 5e-04, 2.5e-04
    name = f"{self.method}_lr{lr}"
    if self.method == "profit":
      name += f"_ratio{self.ratio:g}_{self.convention}"
    if self.method == "l2sp":
      name += f"_alpha{self.alpha:g}"
    return f"{name}_bs{self.batch_size}"


def _digest(key: dict) -> str:
  return digest(key, 12)


def base_cache_key(config: Config, seed: int) -> dict:
  """Everything the base model of ``seed`` depends on (its cache key)."""
  key = {f: getattr(config, f) for f in BASE_FIELDS}
  key.update(seed=seed, activation="relu", version=BASE_CACHE_VERSION)
  return json.loads(json.dumps(key))  # tuples -> lists, as read back


def base_cache_dir(workdir: pathlib.Path, config: Config, seed: int) -> pathlib.Path:
  """Folder of the cached base model of ``seed``."""
  return workdir / "base_models" / f"seed{seed}-{_digest(base_cache_key(config, seed))}"


def load_base(cache: pathlib.Path, target: Params) -> Params | None:
  """The cached base model in ``cache``, or None when there is none.

  Args:
    cache: from :func:`base_cache_dir` (absolute).
    target: a pytree of the parameters' structure (e.g. the initialization).

  Returns:
    The parameters, as uncommitted arrays, or None.
  """
  if not ((cache / "key.json").exists() and (cache / "params").exists()):
    return None
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(cache / "params", target)
  # Restored arrays are committed to a device; trained ones are not. Match
  # the trained ones so the compiled train steps are reused, not rebuilt.
  return jax.tree.map(lambda t: jnp.asarray(np.asarray(t)), params)


def save_base(cache: pathlib.Path, params: Params, key: dict) -> None:
  """Caches a base model and its key in ``cache`` (absolute)."""
  cache.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(cache / "params", params, force=True)
  (cache / "key.json").write_text(json.dumps(key, indent=2, sort_keys=True))


def run_cache_key(config: Config, seed: int) -> dict:
  """Everything a fine-tuning run of ``seed`` depends on besides its spec."""
  key = base_cache_key(config, seed)
  key.update({f: getattr(config, f) for f in FINETUNE_FIELDS})
  key.update(run_version=RUN_CACHE_VERSION)
  return json.loads(json.dumps(key))


def run_path(
  workdir: pathlib.Path, config: Config, spec: RunSpec, seed: int
) -> pathlib.Path:
  """The JSON record of one finished run (spec and seed)."""
  digest = _digest(run_cache_key(config, seed))
  return workdir / "runs" / digest / spec.name / f"seed{seed}.json"


def load_run(path: pathlib.Path, *, with_predictions: int | None = None) -> dict | None:
  """A saved run record, or None when missing or incomplete.

  Args:
    path: from :func:`run_path`.
    with_predictions: when set, the run is usable only if its predictions on
      a grid of this many points per axis were saved too (they are returned
      under ``"predictions"``).

  Returns:
    The record, or None.
  """
  if not path.exists():
    return None
  record = json.loads(path.read_text())
  if with_predictions is not None:
    predictions = path.with_suffix(".npz")
    if not predictions.exists():
      return None
    with np.load(predictions) as saved:
      values = saved["predictions"]
    if values.size != with_predictions**2:
      return None
    record["predictions"] = values
  return record


def save_run(
  path: pathlib.Path, record: dict, predictions: np.ndarray | None = None
) -> None:
  """Saves a finished run's record (and its predictions on the image grid).

  The JSON is written last, through a temporary file, so a run interrupted
  while saving is simply run again.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  if predictions is not None:
    np.savez_compressed(path.with_suffix(".npz"), predictions=predictions)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(record))
  tmp.replace(path)


# The runs of an experiment.


def conventions(config: Config) -> tuple[str, ...]:
  """The PROFIT step conventions the table reports."""
  if config.step_convention == "both":
    return ("cycles", "batches")
  return (config.step_convention,)


def sweep_convention(config: Config) -> str:
  """PROFIT's convention in the sweep: compute-matched whenever it is run."""
  return "batches" if "batches" in conventions(config) else conventions(config)[0]


def table_specs(config: Config) -> dict[str, RunSpec]:
  """The fine-tuning runs of the table, keyed by table row."""
  bs = config.batch_size
  specs = {
    "full": RunSpec("full", config.ft_lr, bs),
    "head": RunSpec("head", config.ft_lr, bs),
  }
  for convention in conventions(config):
    specs[f"profit_{convention}"] = RunSpec(
      "profit", config.ft_lr, bs, ratio=config.ratio, convention=convention
    )
  return specs


def sweep_specs(config: Config) -> list[RunSpec]:
  """The runs of the frontier: every family, at every sweep batch size."""
  if not config.sweep:
    return []
  convention = sweep_convention(config)
  specs = []
  for bs in default.finetune_batch_sizes(config):
    specs += [RunSpec("full", lr, bs) for lr in config.sweep_lrs]
    specs += [RunSpec("head", lr, bs) for lr in config.head_lrs]
    specs += [
      RunSpec("l2sp", lr, bs, alpha=alpha)
      for lr in config.l2sp_lrs
      for alpha in config.l2sp_alphas
    ]
    specs += [
      RunSpec("profit", lr, bs, ratio=ratio, convention=convention)
      for lr in config.sweep_profit_lrs
      for ratio in config.sweep_ratios
    ]
  return specs


def all_specs(config: Config) -> list[RunSpec]:
  """Table and sweep runs, without duplicates, in a stable order."""
  seen: dict[str, RunSpec] = {}
  for spec in [*table_specs(config).values(), *sweep_specs(config)]:
    seen.setdefault(spec.name, spec)
  return list(seen.values())


def cycle_length(spec: RunSpec, config: Config) -> int:
  """Batches consumed by one call of the train step."""
  return config.n_ref + 1 if spec.method == "profit" else 1


def num_calls(spec: RunSpec, config: Config) -> int:
  """Train-step calls of a run: batches, or PROFIT cycles."""
  if spec.method == "profit" and spec.convention == "batches":
    return config.ft_steps // (config.n_ref + 1)
  return config.ft_steps
