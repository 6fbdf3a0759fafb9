"""The runs of an experiment, the cached base models and the finished runs."""

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from examples.common import runs as common_runs

#: Bump when base training or a run's record changes beyond the config.
BASE_CACHE_VERSION = RUN_CACHE_VERSION = 1
#: PROFIT's step conventions in the table, per ``step_convention``.
CONVENTIONS = dict(cycles=("cycles",), batches=("batches",), both=("cycles", "batches"))
#: Config fields the base model depends on.
BASE_FIELDS = (
  "n_train noise_std old_domain hidden batch_size rmsprop_decay rmsprop_eps "
  "base_steps base_lr base_decay_every base_decay_rate"
).split()
#: Config fields a fine-tuning run depends on beyond its base model and spec.
FINETUNE_FIELDS = (
  "n_test n_val new_domain ft_steps ft_decay_every ft_decay_rate n_ref storage "
  "delta_dtype eval_every eval_early wise_points"
).split()


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One fine-tuning setting: ``method`` full, head, l2sp (with ``alpha``) or
  profit (with ``ratio`` = lambda_main / lambda_ref and a step ``convention``)."""

  method: str
  lr: float
  batch_size: int
  ratio: float | None = None
  convention: str | None = None
  alpha: float | None = None

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


def base_cache_key(config, seed: int) -> dict:
  key = {f: getattr(config, f) for f in BASE_FIELDS}
  key.update(seed=seed, activation="relu", version=BASE_CACHE_VERSION)
  return json.loads(json.dumps(key))  # tuples -> lists, as read back


def base_cache_dir(workdir: pathlib.Path, config, seed: int) -> pathlib.Path:
  digest = common_runs.digest(base_cache_key(config, seed), 12)
  return workdir / "base_models" / f"seed{seed}-{digest}"


def load_base(cache: pathlib.Path, target: Any) -> Any | None:
  if not ((cache / "key.json").exists() and (cache / "params").exists()):
    return None
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(cache / "params", target)
  # Uncommitted like trained arrays, so that the compiled steps are reused.
  return jax.tree.map(lambda t: jnp.asarray(np.asarray(t)), params)


def save_base(cache: pathlib.Path, params: Any, key: dict) -> None:
  cache.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(cache / "params", params, force=True)
  (cache / "key.json").write_text(json.dumps(key, indent=2, sort_keys=True))


def run_path(workdir: pathlib.Path, config, spec, seed: int) -> pathlib.Path:
  key = base_cache_key(config, seed) | {f: getattr(config, f) for f in FINETUNE_FIELDS}
  digest = common_runs.digest(key | {"run_version": RUN_CACHE_VERSION}, 12)
  return workdir / "runs" / digest / spec.name / f"seed{seed}.json"


def load_run(path: pathlib.Path, *, with_predictions: int | None = None) -> dict | None:
  """A saved run record, or None; with ``with_predictions`` (grid points per axis)
  only a run whose predictions were saved too (under ``"predictions"``)."""
  record = common_runs.load_result(path)
  npz = path.with_suffix(".npz")
  if record is None or with_predictions is None:
    return record
  if not npz.exists():
    return None
  with np.load(npz) as saved:
    record["predictions"] = saved["predictions"]
  return record if record["predictions"].size == with_predictions**2 else None


def save_run(path: pathlib.Path, record: dict, predictions=None) -> None:
  """Saves a run's predictions on the image grid, then (atomically) its record."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if predictions is not None:
    np.savez_compressed(path.with_suffix(".npz"), predictions=predictions)
  common_runs.write_json(path, record)


def table_specs(config) -> dict[str, RunSpec]:
  """Table row -> run."""
  lr, bs = config.ft_lr, config.batch_size
  specs = {"full": RunSpec("full", lr, bs), "head": RunSpec("head", lr, bs)}
  for c in CONVENTIONS[config.step_convention]:
    specs[f"profit_{c}"] = RunSpec("profit", lr, bs, ratio=config.ratio, convention=c)
  return specs


def sweep_specs(config) -> list[RunSpec]:
  """Every family at every batch size of the sweep (PROFIT compute-matched)."""
  if not config.sweep:
    return []
  c = config
  convention = CONVENTIONS[c.step_convention][-1]  # compute-matched if run
  specs = []
  for bs in c.batch_sizes or (c.batch_size,):
    specs += [RunSpec("full", lr, bs) for lr in c.sweep_lrs]
    specs += [RunSpec("head", lr, bs) for lr in c.head_lrs]
    for lr in c.l2sp_lrs:
      specs += [RunSpec("l2sp", lr, bs, alpha=alpha) for alpha in c.l2sp_alphas]
    for lr in c.sweep_profit_lrs:
      specs += [RunSpec("profit", lr, bs, r, convention) for r in c.sweep_ratios]
  return specs


def all_specs(config) -> list[RunSpec]:
  """Table and sweep runs, without duplicates, in a stable order."""
  seen: dict[str, RunSpec] = {}
  for spec in [*table_specs(config).values(), *sweep_specs(config)]:
    seen.setdefault(spec.name, spec)
  return list(seen.values())


def cycle_length(spec: RunSpec, config) -> int:
  """Batches consumed by one call of the train step."""
  return config.n_ref + 1 if spec.method == "profit" else 1


def num_calls(spec: RunSpec, config) -> int:
  """Train-step calls of a run: batches, or PROFIT cycles."""
  if spec.method == "profit" and spec.convention == "batches":
    return config.ft_steps // (config.n_ref + 1)
  return config.ft_steps
