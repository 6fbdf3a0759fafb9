"""Base training, fine-tuning (full, head-only, PROFIT) and evaluation.

``train_and_evaluate(config, workdir)`` runs the whole experiment: for every
seed it trains (or loads from the orbax cache) the base model on the original
data, fine-tunes it on the new data with every method of the table and of the
trade-off sweep, evaluates both noise-free test sets along training, then
writes ``results.json``, ``table.md`` and the figures into ``workdir``.

Every run goes through :func:`optax_profit.make_train_step`: PROFIT with one
cycle (``n_ref + 1`` batches) per call, the baselines with one batch per call.
Calls are ``lax.scan``-ned in jitted chunks between two evaluations.
"""

import dataclasses
import functools
import hashlib
import json
import math
import pathlib
import time
from collections.abc import Callable
from typing import Any

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm

import optax_profit
from examples.toy_regression import input_pipeline, models, plotting, reporting
from examples.toy_regression.configs import default

Config = default.Config
Params = Any

#: Bump when the base training changes in a way the config does not show.
BASE_CACHE_VERSION = 1
METHODS = ("full", "head", "profit")


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One fine-tuning setting.

  Attributes:
    method: ``"full"``, ``"head"`` or ``"profit"``.
    lr: learning rate (PROFIT: of the main optimizer).
    ratio: PROFIT's ``lambda_main / lambda_ref`` (None otherwise).
    convention: PROFIT's step convention, ``"cycles"`` or ``"batches"``.
  """

  method: str
  lr: float
  ratio: float | None = None
  convention: str | None = None

  @property
  def name(self) -> str:
    """A unique, readable name, e.g. ``profit_lr5e-04_ratio100_cycles``."""
    lr = np.format_float_scientific(self.lr, trim="-")  # 5e-04, 2.5e-04
    name = f"{self.method}_lr{lr}"
    if self.method == "profit":
      name += f"_ratio{self.ratio:g}_{self.convention}"
    return name


#: CLI flags whose name is not the field's (see main.py).
_FLAG_NAMES = {
  "sweep_lrs": "--lrs",
  "sweep_ratios": "--ratios",
  "sweep_profit_lrs": "--profit-lrs",
  "sweep": "--no-sweep",
}


def validate_config(config: Config) -> None:
  """Raises ``ValueError`` naming the field (and CLI flag) of a bad value.

  Args:
    config: the configuration to check.
  """

  def check(ok: bool, field: str, message: str) -> None:
    if not ok:
      flag = _FLAG_NAMES.get(field, "--" + field.replace("_", "-"))
      raise ValueError(f"`{field}` ({flag}) {message}, got {getattr(config, field)!r}.")

  for field in (
    "n_train",
    "n_test",
    "hidden",
    "batch_size",
    "ft_steps",
    "n_ref",
    "eval_every",
    "plot_grid",
    "base_decay_every",
    "ft_decay_every",
  ):
    value = getattr(config, field)
    check(
      isinstance(value, int) and not isinstance(value, bool) and value >= 1,
      field,
      "must be an int >= 1",
    )
  check(
    isinstance(config.base_steps, int) and config.base_steps >= 0,
    "base_steps",
    "must be an int >= 0",
  )
  check(
    config.batch_size <= config.n_train,
    "batch_size",
    f"must be at most n_train = {config.n_train}",
  )
  for field in ("base_lr", "ft_lr", "ratio"):
    value = getattr(config, field)
    check(math.isfinite(value) and value > 0, field, "must be a finite number > 0")
  check(config.noise_std >= 0, "noise_std", "must be >= 0")
  check(config.storage in ("delta", "copy"), "storage", "must be delta or copy")
  check(
    config.delta_dtype in (None, "float32", "float64", "bfloat16", "float16"),
    "delta_dtype",
    "must be one of float32, float64, bfloat16, float16",
  )
  check(
    config.delta_dtype is None or config.storage == "delta",
    "delta_dtype",
    "applies to storage=delta only",
  )
  for field in ("base_decay_rate", "ft_decay_rate"):
    check(0 < getattr(config, field) <= 1, field, "must be in (0, 1]")
  check(0 <= config.rmsprop_decay < 1, "rmsprop_decay", "must be in [0, 1)")
  check(config.rmsprop_eps > 0, "rmsprop_eps", "must be > 0")
  check(
    config.step_convention in default.STEP_CONVENTIONS,
    "step_convention",
    f"must be one of {default.STEP_CONVENTIONS}",
  )
  check(
    config.ft_steps >= config.n_ref + 1 or config.step_convention == "cycles",
    "ft_steps",
    f"must be >= n_ref + 1 = {config.n_ref + 1} for the compute-matched "
    "(batches) convention",
  )
  check(len(config.seeds) >= 1, "seeds", "must name at least one seed")
  check(len(set(config.seeds)) == len(config.seeds), "seeds", "must be distinct")
  check(
    all(isinstance(v, int) and v >= 0 for v in config.seeds),
    "seeds",
    "must be ints >= 0",
  )
  for field in ("sweep_lrs", "sweep_ratios", "sweep_profit_lrs"):
    values = getattr(config, field)
    check(
      all(math.isfinite(v) and v > 0 for v in values),
      field,
      "must hold finite numbers > 0",
    )
  for field in ("old_domain", "new_domain"):
    low, high = getattr(config, field)
    check(low < high, field, "must be (low, high) with low < high")


def conventions(config: Config) -> tuple[str, ...]:
  """The PROFIT step conventions the table reports."""
  if config.step_convention == "both":
    return ("cycles", "batches")
  return (config.step_convention,)


def table_specs(config: Config) -> dict[str, RunSpec]:
  """The fine-tuning runs of the table, keyed by table row."""
  specs = {
    "full": RunSpec("full", config.ft_lr),
    "head": RunSpec("head", config.ft_lr),
  }
  for convention in conventions(config):
    specs[f"profit_{convention}"] = RunSpec(
      "profit", config.ft_lr, config.ratio, convention
    )
  return specs


def sweep_specs(config: Config) -> list[RunSpec]:
  """The runs of the trade-off figure (PROFIT in the first convention)."""
  if not config.sweep:
    return []
  convention = conventions(config)[0]
  specs = [RunSpec("full", lr) for lr in config.sweep_lrs]
  specs += [
    RunSpec("profit", lr, ratio, convention)
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


def _staircase(init: float, every: float, rate: float) -> optax.Schedule:
  return optax.exponential_decay(
    init_value=init,
    transition_steps=max(1, round(every)),
    decay_rate=rate,
    staircase=True,
  )


def rmsprop(config: Config, lr: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """RMSProp with PyTorch's semantics (eps outside the square root)."""
  return optax.rmsprop(
    lr, decay=config.rmsprop_decay, eps=config.rmsprop_eps, eps_in_sqrt=False
  )


def base_optimizer(config: Config) -> optax.GradientTransformation:
  """RMSProp at ``base_lr``, decayed by ``base_decay_rate`` (staircase)."""
  return rmsprop(
    config,
    _staircase(config.base_lr, config.base_decay_every, config.base_decay_rate),
  )


def head_labels(params: Params) -> Params:
  """``"train"`` for the last Dense layer's leaves, ``"freeze"`` elsewhere."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict(
    {k: "train" if models.HEAD in k else "freeze" for k in flat}
  )


def finetune_optimizer(
  spec: RunSpec,
  config: Config,
  lr: jax.typing.ArrayLike | None = None,
  ratio: jax.typing.ArrayLike | None = None,
) -> optax.GradientTransformation:
  """The optimizer of one fine-tuning run.

  Args:
    spec: the run.
    config: the configuration.
    lr: overrides ``spec.lr`` (may be a traced scalar: runs that differ only
      in ``lr`` and ``ratio`` then share one compiled step).
    ratio: overrides ``spec.ratio`` (may be traced).

  Returns:
    RMSProp at ``lr`` with the staircase decay (``full``); the same on the
    head only, ``optax.set_to_zero()`` elsewhere (``head``); or
    ``optax_profit.profit`` around it with SGD reference steps at
    ``lr / ratio`` following the same schedule (``profit``).
  """
  if spec.method not in METHODS:
    raise ValueError(f"`method` must be one of {METHODS}, got {spec.method!r}.")
  lr = spec.lr if lr is None else lr
  ratio = spec.ratio if ratio is None else ratio
  every = config.ft_decay_every
  if spec.method == "profit" and spec.convention == "batches":
    every = config.ft_decay_every / (config.n_ref + 1)  # in main steps
  schedule = _staircase(lr, every, config.ft_decay_rate)
  main = rmsprop(config, schedule)
  if spec.method == "full":
    return main
  if spec.method == "head":
    return optax.multi_transform(
      {"train": main, "freeze": optax.set_to_zero()}, head_labels
    )
  n_ref = config.n_ref

  def ref_schedule(ref_count: jax.Array) -> jax.Array:
    # ref_count counts reference steps (n_ref per cycle): keep lr/ratio fixed.
    return schedule(ref_count // n_ref) / ratio

  return optax_profit.profit(
    main, ref=ref_schedule, n_ref=n_ref, storage=config.storage,
    delta_dtype=config.delta_dtype,
  )


def compile_key(spec: RunSpec) -> tuple[str, str | None]:
  """Runs with the same key share one compiled chunk (lr, ratio are traced)."""
  return spec.method, spec.convention


@functools.lru_cache(maxsize=16)
def _finetune_chunk_fn(
  model: models.MLP, config: Config, method: str, convention: str | None
) -> Callable[..., Any]:
  """The compiled chunk of a fine-tuning method, shared by runs and calls."""
  spec = RunSpec(method, 1.0, 1.0, convention)  # lr and ratio come traced.
  return make_chunk_fn(
    model,
    functools.partial(finetune_optimizer, spec, config),
    cycle_length(spec, config),
  )


def make_loss_fn(model: models.MLP) -> Callable[[Params, dict], jax.Array]:
  """Mean squared error of ``model`` on a batch ``{"x", "y"}``."""

  def loss_fn(params: Params, batch: dict) -> jax.Array:
    return jnp.mean((model.apply(params, batch["x"]) - batch["y"]) ** 2)

  return loss_fn


def make_chunk_fn(
  model: models.MLP,
  make_tx: Callable[[jax.Array, jax.Array], optax.GradientTransformation],
  length: int,
) -> Callable[..., tuple[Params, optax.OptState, dict]]:
  """A jitted function running many train-step calls in one ``lax.scan``.

  Args:
    model: the MLP.
    make_tx: builds the optimizer from ``(lr, ratio)`` (traced scalars).
    length: batches per train-step call (``n_ref + 1`` for PROFIT).

  Returns:
    ``chunk(params, opt_state, x, y, idx, lr, ratio) -> (params, opt_state,
    metrics)`` where ``idx`` is int32 ``[calls, length, batch_size]`` (indices
    into the training set ``x``, ``y``); params and opt_state are donated.
    ``metrics`` stacks :func:`optax_profit.make_train_step`'s metrics over the
    calls.
  """
  loss_fn = make_loss_fn(model)

  def chunk(params, opt_state, x, y, idx, lr, ratio):
    step = optax_profit.make_train_step(
      loss_fn, make_tx(lr, ratio), cycle_length=length
    )

    def body(carry, cycle_idx):
      params, opt_state = carry
      params, opt_state, metrics = step(
        params, opt_state, {"x": x[cycle_idx], "y": y[cycle_idx]}
      )
      return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), idx)
    return params, opt_state, metrics

  return jax.jit(chunk, donate_argnums=(0, 1))


@functools.lru_cache(maxsize=4)
def make_eval_fn(model: models.MLP) -> Callable[[Params, dict], jax.Array]:
  """Jitted MSE of ``model`` on a whole (noise-free) test set ``{"x", "y"}``."""
  return jax.jit(make_loss_fn(model))


@functools.lru_cache(maxsize=4)
def make_predict_fn(model: models.MLP) -> Callable[[Params, Any], jax.Array]:
  """Jitted predictions of ``model``."""
  return jax.jit(model.apply)


def _copy(tree: Params) -> Params:
  return jax.tree.map(lambda t: jnp.array(t, copy=True), tree)


def _errors(eval_fn, params, data: input_pipeline.Datasets) -> tuple[float, float]:
  """(original-data MSE, new-data MSE) on the noise-free test sets."""
  old = eval_fn(params, {"x": data.old_test.x, "y": data.old_test.y})
  new = eval_fn(params, {"x": data.new_test.x, "y": data.new_test.y})
  return float(old), float(new)


def base_cache_key(config: Config, seed: int) -> dict:
  """Everything the base model depends on (the orbax cache key)."""
  fields = (
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
  key = {f: getattr(config, f) for f in fields}
  key.update(seed=seed, activation="relu", version=BASE_CACHE_VERSION)
  return json.loads(json.dumps(key))  # tuples -> lists, as read back


def base_cache_dir(workdir: pathlib.Path, config: Config, seed: int) -> pathlib.Path:
  """Folder of the cached base model of ``seed``."""
  blob = json.dumps(base_cache_key(config, seed), sort_keys=True)
  digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
  return workdir / "base_models" / f"seed{seed}-{digest}"


@functools.lru_cache(maxsize=4)
def _base_chunk_fn(model: models.MLP, config: Config) -> Callable[..., Any]:
  """One compiled base-training chunk per (model, config), shared by seeds."""
  tx = base_optimizer(config)
  return make_chunk_fn(model, lambda lr, ratio: tx, 1)


def train_base(
  model: models.MLP,
  params: Params,
  data: input_pipeline.Datasets,
  config: Config,
  seed: int,
) -> Params:
  """Trains the base model on the original data for ``base_steps`` batches.

  Args:
    model: the MLP.
    params: initial parameters (donated).
    data: the seed's datasets.
    config: the configuration.
    seed: seeds the batch order.

  Returns:
    The trained parameters.
  """
  opt_state = base_optimizer(config).init(params)
  chunk_fn = _base_chunk_fn(model, config)
  unused = jnp.zeros((), jnp.float32)
  sampler = input_pipeline.EpochSampler(
    config.n_train, config.batch_size, seed=_child_seed(seed, "base")
  )
  x, y = jnp.asarray(data.old_train.x), jnp.asarray(data.old_train.y)
  done = 0
  chunk = 500
  with tqdm.tqdm(
    total=config.base_steps, desc=f"seed {seed} base", unit="step", leave=False
  ) as bar:
    while done < config.base_steps:
      k = min(chunk, config.base_steps - done)
      idx = sampler.next_indices(k)[:, None, :]
      params, opt_state, metrics = chunk_fn(
        params, opt_state, x, y, idx, unused, unused
      )
      done += k
      bar.update(k)
      bar.set_postfix(loss=f"{float(jnp.mean(metrics['loss'])):.3f}")
  return params


def load_or_train_base(
  model: models.MLP,
  data: input_pipeline.Datasets,
  config: Config,
  seed: int,
  workdir: pathlib.Path,
) -> tuple[Params, dict]:
  """Loads the cached base model of ``seed`` or trains and caches it.

  Args:
    model: the MLP.
    data: the seed's datasets.
    config: the configuration.
    seed: the seed.
    workdir: the output folder (the cache lives in ``workdir/base_models``).

  Returns:
    ``(params, info)``; ``info`` says whether the model came from the cache,
    where it lives and how long training took.
  """
  init = models.init_params(model, jax.random.key(seed))
  cache = base_cache_dir(workdir, config, seed).absolute()
  info: dict[str, Any] = {"seed": seed, "path": str(cache)}
  ckpt_path = cache / "params"
  if (cache / "key.json").exists() and ckpt_path.exists():
    with ocp.StandardCheckpointer() as checkpointer:
      params = checkpointer.restore(ckpt_path, init)
    # Restored arrays are committed to a device; trained ones are not. Match
    # the trained ones so the compiled train steps are reused, not rebuilt.
    params = jax.tree.map(lambda t: jnp.asarray(np.asarray(t)), params)
    info.update(loaded_from_cache=True, train_seconds=0.0)
    tqdm.tqdm.write(
      f"seed {seed}: loaded the cached base model from {cache} (skipping pre-training)"
    )
    return params, info
  start = time.perf_counter()
  params = jax.block_until_ready(train_base(model, init, data, config, seed))
  info.update(loaded_from_cache=False, train_seconds=time.perf_counter() - start)
  cache.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(ckpt_path, params, force=True)
  (cache / "key.json").write_text(
    json.dumps(base_cache_key(config, seed), indent=2, sort_keys=True)
  )
  tqdm.tqdm.write(
    f"seed {seed}: trained the base model in {info['train_seconds']:.1f} s, "
    f"cached in {cache}"
  )
  return params, info


def _child_seed(seed: int, name: str) -> int:
  digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
  return int.from_bytes(digest[:4], "little")


def finetune(
  spec: RunSpec,
  chunk_fn: Callable[..., Any],
  eval_fn: Callable[..., jax.Array],
  base_params: Params,
  data: input_pipeline.Datasets,
  config: Config,
  seed: int,
) -> tuple[Params, dict]:
  """Fine-tunes a copy of ``base_params`` on the new data.

  Every method sees the same sequence of batches for a given seed (PROFIT
  consumes ``n_ref + 1`` of them per main step).

  Args:
    spec: the run.
    chunk_fn: from :func:`make_chunk_fn` for this run's optimizer.
    eval_fn: from :func:`make_eval_fn`.
    base_params: the base model (not modified).
    data: the seed's datasets.
    config: the configuration.
    seed: the seed.

  Returns:
    ``(params, record)``: the fine-tuned parameters, and the run's curve
    (``batches``, ``main_steps``, ``old_error``, ``new_error`` at every
    evaluation, the first being the base model), final errors, and for PROFIT
    the fraction of main steps whose gradient was projected and the median
    norm of the reference displacement ``delta``.
  """
  tx = finetune_optimizer(spec, config)
  lr = jnp.asarray(spec.lr, jnp.float32)
  ratio = jnp.asarray(spec.ratio or 1.0, jnp.float32)
  params = _copy(base_params)
  opt_state = tx.init(params)
  length = cycle_length(spec, config)
  calls = num_calls(spec, config)
  # Chunks of about `eval_early` batches: evaluate after each chunk during
  # the first `eval_every` batches (the fast early phase), then every
  # `eval_every` batches, and at the end.
  early = min(config.eval_early, config.eval_every)
  calls_per_chunk = max(1, math.ceil(early / length))
  last_eval = 0
  sampler = input_pipeline.EpochSampler(
    config.n_train, config.batch_size, seed=_child_seed(seed, "finetune")
  )
  x, y = jnp.asarray(data.new_train.x), jnp.asarray(data.new_train.y)
  old, new = _errors(eval_fn, params, data)
  curve = {"batches": [0], "main_steps": [0], "old_error": [old], "new_error": [new]}
  projected, delta_norms = [], []
  done = 0
  with tqdm.tqdm(
    total=calls * length,
    desc=f"seed {seed} {spec.name}",
    unit="batch",
    leave=False,
  ) as bar:
    while done < calls:
      k = min(calls_per_chunk, calls - done)
      idx = sampler.next_indices(k * length).reshape(k, length, -1)
      params, opt_state, metrics = chunk_fn(params, opt_state, x, y, idx, lr, ratio)
      done += k
      if "projected" in metrics:
        projected.append(np.asarray(metrics["projected"]))
        delta_norms.append(np.asarray(metrics["delta_norm"]))
      bar.update(k * length)
      batches = done * length
      if not (
        batches <= config.eval_every
        or batches // config.eval_every > last_eval // config.eval_every
        or done == calls
      ):
        continue
      last_eval = batches
      old, new = _errors(eval_fn, params, data)
      curve["batches"].append(batches)
      curve["main_steps"].append(done)
      curve["old_error"].append(old)
      curve["new_error"].append(new)
      bar.set_postfix(old=f"{old:.3f}", new=f"{new:.3f}")
  record: dict[str, Any] = {
    "batches": calls * length,
    "main_steps": calls,
    "old_error": old,
    "new_error": new,
    "curve": curve,
  }
  if projected:
    record["projected_fraction"] = float(np.mean(np.concatenate(projected)))
    record["delta_norm_median"] = float(np.median(np.concatenate(delta_norms)))
  return params, record


def train_and_evaluate(config: Config, workdir: str | pathlib.Path) -> dict:
  """Runs the whole toy experiment and writes its outputs.

  Args:
    config: the configuration.
    workdir: output folder: ``results.json``, ``table.md``,
      ``fig3_predictions.png``, ``tradeoff.png``, ``errors_vs_batches.png``,
      ``predictions.npz`` (the first seed's predictions on the image grid)
      and the cached base models (``base_models/``).

  Returns:
    The results dict written to ``results.json``.
  """
  validate_config(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  model = models.MLP(hidden=config.hidden)
  eval_fn = make_eval_fn(model)
  specs = all_specs(config)
  chunk_fns = {
    compile_key(s): _finetune_chunk_fn(model, config, *compile_key(s)) for s in specs
  }
  predict = make_predict_fn(model)
  grid = plotting.make_grid(config)

  base_info, base_errors, runs = [], [], {s.name: [] for s in specs}
  predictions: dict[str, np.ndarray] = {}
  table_runs = {row: s.name for row, s in table_specs(config).items()}
  for i, seed in enumerate(config.seeds):
    data = input_pipeline.make_datasets(
      seed,
      n_train=config.n_train,
      n_test=config.n_test,
      old_domain=config.old_domain,
      new_domain=config.new_domain,
      noise_std=config.noise_std,
    )
    base_params, info = load_or_train_base(model, data, config, seed, workdir)
    old, new = _errors(eval_fn, base_params, data)
    info.update(old_error=old, new_error=new)
    base_info.append(info)
    base_errors.append((old, new))
    if i == 0:
      predictions["baseline"] = np.asarray(predict(base_params, grid))
    for spec in specs:
      params, record = finetune(
        spec, chunk_fns[compile_key(spec)], eval_fn, base_params, data, config, seed
      )
      record["seed"] = seed
      runs[spec.name].append(record)
      if i == 0:
        for row, name in table_runs.items():
          if name == spec.name:
            predictions[row] = np.asarray(predict(params, grid))

  results = reporting.assemble(
    config=config,
    specs=specs,
    table_runs=table_runs,
    base_info=base_info,
    base_errors=base_errors,
    runs=runs,
  )
  results["frontier"] = reporting.frontier(results)
  results["wall_seconds"] = time.perf_counter() - start
  results["device"] = str(jax.devices()[0].device_kind)
  np.savez_compressed(workdir / "predictions.npz", grid=grid, **predictions)
  results["figures"] = plotting.save_all(results, predictions, grid, config, workdir)
  (workdir / "results.json").write_text(json.dumps(results, indent=1))
  (workdir / "table.md").write_text(reporting.markdown_table(results) + "\n")
  return results


def replot(workdir: str | pathlib.Path) -> dict:
  """Redraws the figures of a finished run from its saved outputs.

  Args:
    workdir: a folder written by :func:`train_and_evaluate`.

  Returns:
    Its results dict.
  """
  workdir = pathlib.Path(workdir)
  results = json.loads((workdir / "results.json").read_text())
  fields = {f.name for f in dataclasses.fields(Config)}
  config = Config(
    **{
      k: tuple(v) if isinstance(v, list) else v
      for k, v in results["config"].items()
      if k in fields
    }
  )
  with np.load(workdir / "predictions.npz") as saved:
    grid = saved["grid"]
    predictions = {k: saved[k] for k in saved.files if k != "grid"}
  results["frontier"] = reporting.frontier(results)
  results["figures"] = plotting.save_all(results, predictions, grid, config, workdir)
  return results
