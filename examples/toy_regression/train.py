"""Base training, fine-tuning (full, head-only, L2-SP, PROFIT), WiSE-FT, evaluation.

``train_and_evaluate(config, workdir)`` runs the whole experiment: for every
seed it trains (or loads from the cache) the base model on the original data,
fine-tunes it on the new data with every method of the table and of the sweep
(at every fine-tuning batch size of the sweep), interpolates the weights of
every full fine-tuning and PROFIT run with the base model (WiSE-FT), evaluates
the held-out and test sets of both domains along training, then writes
``results.json``, ``table.md`` and the figures into ``workdir``.

Every run goes through :func:`optax_profit.make_train_step`: PROFIT with one
cycle (``n_ref + 1`` batches) per call, the baselines with one batch per call.
Calls are ``lax.scan``-ned in jitted chunks between two evaluations. Curves are
indexed by batches consumed (forward/backward passes).
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
import tqdm

import optax_profit
from examples.common import baselines, compile_cache
from examples.common import runs as common_runs
from examples.toy_regression import (
  input_pipeline,
  models,
  optimizers,
  plotting,
  reporting,
  runs,
)
from examples.toy_regression.configs import default

Config = default.Config
Params = Any
RunSpec = runs.RunSpec
#: The evaluation sets, in the order of :func:`make_errors_fn`'s output.
EVAL_SETS = ("old_error", "new_error", "old_val", "new_val")
#: PROFIT's diagnostics logged along training (see ``profit_diagnostics``).
DIAGNOSTICS = ("removed_fraction", "cosine", "projected", "delta_norm")


def make_loss_fn(model: models.MLP) -> Callable[[Params, dict], jax.Array]:
  """Mean squared error of ``model`` on a batch ``{"x", "y"}``."""

  def loss_fn(params: Params, batch: dict) -> jax.Array:
    return jnp.mean((model.apply(params, batch["x"]) - batch["y"]) ** 2)

  return loss_fn


def l2sp_penalty(params: Params, pre: Params, alpha: jax.typing.ArrayLike) -> jax.Array:
  """L2-SP's ``alpha / 2 * ||theta - theta_pre||^2`` over the backbone.

  The backbone is every layer but the head (the last Dense), which L2-SP
  (Li et al., 2018) leaves unpenalized; the penalty is
  ``examples.common.baselines.l2sp_penalty``.

  Args:
    params: the current parameters.
    pre: the pre-trained parameters (same structure).
    alpha: the penalty weight.

  Returns:
    The scalar penalty.
  """

  def backbone(tree: Params) -> dict:
    flat = flax.traverse_util.flatten_dict(tree)
    return {"/".join(k): v for k, v in flat.items() if models.HEAD not in k}

  return baselines.l2sp_penalty(backbone(params), backbone(pre), alpha)


def make_l2sp_loss_fn(
  model: models.MLP, pre: Params, alpha: jax.typing.ArrayLike
) -> Callable[[Params, dict], jax.Array]:
  """The new-data MSE plus :func:`l2sp_penalty` towards ``pre``."""
  mse = make_loss_fn(model)
  return lambda params, batch: mse(params, batch) + l2sp_penalty(params, pre, alpha)


def make_chunk_fn(
  model: models.MLP,
  make_tx: Callable[[jax.Array, jax.Array], optax.GradientTransformation],
  length: int,
  l2sp: bool = False,
) -> Callable[..., tuple[Params, optax.OptState, dict]]:
  """A jitted function running many train-step calls in one ``lax.scan``.

  Args:
    model: the MLP.
    make_tx: builds the optimizer from ``(lr, ratio)`` (traced scalars).
    length: batches per train-step call (``n_ref + 1`` for PROFIT).
    l2sp: add :func:`l2sp_penalty` towards ``pre`` (weight ``alpha``) to the
      loss.

  Returns:
    ``chunk(params, opt_state, pre, x, y, idx, lr, ratio, alpha) -> (params,
    opt_state, metrics)`` where ``idx`` is int32 ``[calls, length,
    batch_size]`` (indices into the training set ``x``, ``y``) and ``pre``
    the pre-trained parameters; params and opt_state are donated.
    ``metrics`` stacks :func:`optax_profit.make_train_step`'s metrics over the
    calls.
  """

  def chunk(params, opt_state, pre, x, y, idx, lr, ratio, alpha):
    loss_fn = make_l2sp_loss_fn(model, pre, alpha) if l2sp else make_loss_fn(model)
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


def compile_key(spec: RunSpec) -> tuple[str, str | None]:
  """Runs with the same key share one compiled chunk (lr, ratio are traced)."""
  return spec.method, spec.convention


@compile_cache.cached()  # keyed on the whole config
def _finetune_chunk_fn(
  config: Config, model: models.MLP, method: str, convention: str | None
) -> Callable[..., Any]:
  """The compiled chunk of a fine-tuning method, shared by runs and calls."""
  spec = RunSpec(
    method,
    1.0,
    1,
    ratio=1.0 if method == "profit" else None,
    convention=convention,
    alpha=1.0 if method == "l2sp" else None,
  )  # lr, ratio and alpha come traced.
  return make_chunk_fn(
    model,
    functools.partial(optimizers.finetune_optimizer, spec, config),
    runs.cycle_length(spec, config),
    l2sp=method == "l2sp",
  )


@functools.lru_cache(maxsize=4)
def make_errors_fn(model: models.MLP) -> Callable[[Params, tuple], jax.Array]:
  """Jitted MSEs of ``model`` on several whole sets ``((x, y), ...)``."""
  loss_fn = make_loss_fn(model)
  return jax.jit(
    lambda params, sets: jnp.stack([loss_fn(params, {"x": x, "y": y}) for x, y in sets])
  )


@functools.lru_cache(maxsize=4)
def make_predict_fn(model: models.MLP) -> Callable[[Params, Any], jax.Array]:
  """Jitted predictions of ``model``."""
  return jax.jit(model.apply)


def _eval_sets(data: input_pipeline.Datasets) -> tuple:
  """The sets of :data:`EVAL_SETS`, in order, as device arrays."""
  splits = (data.old_test, data.new_test, data.old_val, data.new_val)
  return tuple((jnp.asarray(s.x), jnp.asarray(s.y)) for s in splits)


def evaluate(errors_fn: Callable[..., jax.Array], params: Params, sets: tuple) -> dict:
  """``{name: MSE}`` for :data:`EVAL_SETS` (noise-free targets)."""
  values = np.asarray(errors_fn(params, sets), np.float64)
  return dict(zip(EVAL_SETS, values.tolist(), strict=True))


@compile_cache.cached(maxsize=4)  # keyed on the whole config
def _base_chunk_fn(config: Config, model: models.MLP) -> Callable[..., Any]:
  """One compiled base-training chunk per (model, config), shared by seeds."""
  tx = optimizers.base_optimizer(config)
  return make_chunk_fn(model, lambda lr, ratio: tx, 1)


def _child_seed(seed: int, name: str) -> int:
  digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
  return int.from_bytes(digest[:4], "little")


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
  opt_state = optimizers.base_optimizer(config).init(params)
  chunk_fn = _base_chunk_fn(config, model)
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
        params, opt_state, unused, x, y, idx, unused, unused, unused
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
  cache = runs.base_cache_dir(workdir, config, seed).absolute()
  info: dict[str, Any] = {"seed": seed, "path": str(cache)}
  params = runs.load_base(cache, init)
  if params is not None:
    info.update(loaded_from_cache=True, train_seconds=0.0)
    tqdm.tqdm.write(
      f"seed {seed}: loaded the cached base model from {cache} (skipping pre-training)"
    )
    return params, info
  start = time.perf_counter()
  params = jax.block_until_ready(train_base(model, init, data, config, seed))
  info.update(loaded_from_cache=False, train_seconds=time.perf_counter() - start)
  runs.save_base(cache, params, runs.base_cache_key(config, seed))
  tqdm.tqdm.write(
    f"seed {seed}: trained the base model in {info['train_seconds']:.1f} s, "
    f"cached in {cache}"
  )
  return params, info


def _summarize_diagnostics(values: dict[str, np.ndarray]) -> dict[str, float]:
  """Means over all main steps, over the first 10 % and over the second half."""
  n = len(values["removed_fraction"])
  parts = {
    "": slice(None),
    "_early": slice(0, max(1, n // 10)),
    "_late": slice(n // 2, None),
  }
  return {
    f"{key}{suffix}": float(np.mean(values[key][part]))
    for key in DIAGNOSTICS
    for suffix, part in parts.items()
  }


def _eval_due(config: Config, batches: int, last_eval: int, final: bool) -> bool:
  """Evaluate after ``batches``: every chunk up to ``eval_every``, then every
  ``eval_every`` batches, and at the end."""
  every = config.eval_every
  return batches <= every or batches // every > last_eval // every or final


def _append_eval(curve, diag_curve, diagnostics, pending, position, errors) -> None:
  """Adds an evaluation to ``curve`` and the last ``pending`` main steps'
  mean diagnostics to ``diag_curve`` (``position``: batches, main steps)."""
  batches, done = position
  curve["batches"].append(batches)
  curve["main_steps"].append(done)
  for key, value in errors.items():
    curve[key].append(value)
  if pending:
    diag_curve["batches"].append(batches)
    for key in DIAGNOSTICS:
      recent = np.concatenate(diagnostics[key])[-pending:]
      diag_curve[key].append(float(np.mean(recent)))


def finetune(
  spec: RunSpec,
  chunk_fn: Callable[..., Any],
  errors_fn: Callable[..., jax.Array],
  base_params: Params,
  data: input_pipeline.Datasets,
  config: Config,
  seed: int,
) -> tuple[Params, dict]:
  """Fine-tunes a copy of ``base_params`` on the new data.

  Every method sees the same sequence of batches for a given seed and batch
  size (PROFIT consumes ``n_ref + 1`` of them per main step).

  Args:
    spec: the run.
    chunk_fn: from :func:`make_chunk_fn` for this run's method.
    errors_fn: from :func:`make_errors_fn`.
    base_params: the base model (not modified).
    data: the seed's datasets.
    config: the configuration.
    seed: the seed.

  Returns:
    ``(params, record)``: the fine-tuned parameters, and the run's curve
    (``batches``, ``main_steps`` and the errors of :data:`EVAL_SETS` at every
    evaluation, the first being the base model) and final errors; for PROFIT
    also ``diagnostics`` (the means of :data:`DIAGNOSTICS` over all main
    steps, the first tenth and the second half of them; ``projected`` as the
    fraction of main steps whose gradient was projected) and ``diag_curve``
    (their means between two evaluations).
  """
  tx = optimizers.finetune_optimizer(spec, config)
  lr = jnp.asarray(spec.lr, jnp.float32)
  ratio = jnp.asarray(spec.ratio or 1.0, jnp.float32)
  alpha = jnp.asarray(spec.alpha or 0.0, jnp.float32)
  params = jax.tree.map(jnp.copy, base_params)
  opt_state = tx.init(params)
  length = runs.cycle_length(spec, config)
  calls = runs.num_calls(spec, config)
  # Chunks of about `eval_early` batches: evaluate after each chunk during
  # the first `eval_every` batches (the fast early phase), then every
  # `eval_every` batches, and at the end.
  early = min(config.eval_early, config.eval_every)
  calls_per_chunk = max(1, math.ceil(early / length))
  last_eval = 0
  sampler = input_pipeline.EpochSampler(
    config.n_train, spec.batch_size, seed=_child_seed(seed, "finetune")
  )
  x, y = jnp.asarray(data.new_train.x), jnp.asarray(data.new_train.y)
  sets = _eval_sets(data)
  curve: dict[str, list] = {"batches": [0], "main_steps": [0]}
  for key, value in evaluate(errors_fn, params, sets).items():
    curve[key] = [value]
  diagnostics: dict[str, list[np.ndarray]] = {k: [] for k in DIAGNOSTICS}
  diag_curve: dict[str, list] = {"batches": [], **{k: [] for k in DIAGNOSTICS}}
  pending = 0  # Main steps whose diagnostics are not in diag_curve yet.
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
      params, opt_state, metrics = chunk_fn(
        params, opt_state, base_params, x, y, idx, lr, ratio, alpha
      )
      done += k
      if "removed_fraction" in metrics:
        for key in DIAGNOSTICS:
          diagnostics[key].append(np.asarray(metrics[key], np.float64))
        pending += k
      bar.update(k * length)
      batches = done * length
      if not _eval_due(config, batches, last_eval, done == calls):
        continue
      last_eval = batches
      errors = evaluate(errors_fn, eval_weights(params, opt_state), sets)
      _append_eval(curve, diag_curve, diagnostics, pending, (batches, done), errors)
      pending = 0
      bar.set_postfix(
        old=f"{errors['old_error']:.3f}", new=f"{errors['new_error']:.3f}"
      )
  record: dict[str, Any] = {
    "batches": calls * length,
    "main_steps": calls,
    **{key: curve[key][-1] for key in EVAL_SETS},
    "curve": curve,
  }
  if diagnostics["removed_fraction"]:
    record["diagnostics"] = _summarize_diagnostics(
      {k: np.concatenate(v) for k, v in diagnostics.items()}
    )
    record["diag_curve"] = diag_curve
  return eval_weights(params, opt_state), record


def eval_weights(params: Params, opt_state: optax.OptState) -> Params:
  """The weights to evaluate and export.

  For PROFIT, ``optax_profit.eval_params``: ``theta_ref`` when the last call
  ended inside a cycle (its params are temporary), else the params; for the
  other methods, the params.
  """
  if optax_profit.profit_diagnostics(opt_state):  # holds a ProfitState
    return optax_profit.eval_params(params, opt_state)
  return params


def wise_curve(
  errors_fn: Callable[..., jax.Array],
  base_params: Params,
  tuned: Params,
  data: input_pipeline.Datasets,
  points: int,
) -> dict[str, list]:
  """Errors of WiSE-FT's interpolations at ``points`` values of ``a`` in [0, 1].

  Args:
    errors_fn: from :func:`make_errors_fn`.
    base_params: the pre-trained parameters.
    tuned: a run's fine-tuned parameters.
    data: the seed's datasets.
    points: how many evenly spaced mixing coefficients (both ends included).

  Returns:
    ``{"a": [...], name: [...] for name in EVAL_SETS}``.
  """
  sets = _eval_sets(data)
  out: dict[str, list] = {"a": [], **{k: [] for k in EVAL_SETS}}
  for a in np.linspace(0.0, 1.0, points).tolist():
    errors = evaluate(errors_fn, baselines.interpolate(base_params, tuned, a), sets)
    out["a"].append(a)
    for key, value in errors.items():
      out[key].append(value)
  return out


def _datasets(config: Config, seed: int) -> input_pipeline.Datasets:
  return input_pipeline.make_datasets(
    seed,
    n_train=config.n_train,
    n_test=config.n_test,
    n_val=config.n_val,
    old_domain=config.old_domain,
    new_domain=config.new_domain,
    noise_std=config.noise_std,
  )


def train_and_evaluate(config: Config, workdir: str | pathlib.Path) -> dict:
  """Runs the whole toy experiment and writes its outputs.

  Finished runs are saved under ``workdir/runs`` and loaded, not rerun, by a
  later call with the same settings (see :mod:`runs`).

  Args:
    config: the configuration.
    workdir: output folder: ``results.json``, ``table.md``,
      ``fig3_predictions.png``, ``tradeoff.png``, ``errors_vs_batches.png``,
      ``diagnostics.png`` (with PROFIT runs), ``predictions.npz`` (the first
      seed's predictions on the image grid), the cached base models
      (``base_models/``) and runs (``runs/``).

  Returns:
    The results dict written to ``results.json``.
  """
  default.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  model = models.MLP(hidden=config.hidden)
  errors_fn = make_errors_fn(model)
  specs = runs.all_specs(config)
  predict = make_predict_fn(model)
  grid = plotting.make_grid(config)

  base_info, records = [], {s.name: [] for s in specs}
  predictions: dict[str, np.ndarray] = {}
  table_runs = {row: s.name for row, s in runs.table_specs(config).items()}
  table_rows = {name: row for row, name in table_runs.items()}
  resumed = 0
  for i, seed in enumerate(config.seeds):
    data = _datasets(config, seed)
    base_params, info = load_or_train_base(model, data, config, seed, workdir)
    info.update(evaluate(errors_fn, base_params, _eval_sets(data)))
    base_info.append(info)
    if i == 0:
      predictions["baseline"] = np.asarray(predict(base_params, grid))
    for spec in specs:
      wants_predictions = i == 0 and spec.name in table_rows
      path = runs.run_path(workdir, config, spec, seed)
      record = runs.load_run(
        path, with_predictions=config.plot_grid if wants_predictions else None
      )
      if record is not None:
        resumed += 1
        prediction = record.pop("predictions", None)
      else:
        chunk_fn = _finetune_chunk_fn(config, model, *compile_key(spec))
        params, record = finetune(
          spec, chunk_fn, errors_fn, base_params, data, config, seed
        )
        if spec.method in ("full", "profit"):
          record["wise"] = wise_curve(
            errors_fn, base_params, params, data, config.wise_points
          )
        record["seed"] = seed
        prediction = np.asarray(predict(params, grid)) if wants_predictions else None
        runs.save_run(path, record, prediction)
      records[spec.name].append(record)
      if wants_predictions:
        predictions[table_rows[spec.name]] = prediction
  if resumed:
    tqdm.tqdm.write(f"loaded {resumed} finished runs from {workdir / 'runs'}")

  results = reporting.assemble(
    config=config,
    specs=specs,
    table_runs=table_runs,
    base_info=base_info,
    runs=records,
  )
  results["frontier"] = reporting.frontier(results)
  results["diagnostics"] = reporting.diagnostics_summary(results)
  results["wall_seconds"] = time.perf_counter() - start
  results["resumed_runs"] = resumed
  results["device"] = str(jax.devices()[0].device_kind)
  np.savez_compressed(workdir / "predictions.npz", grid=grid, **predictions)
  results["figures"] = plotting.save_all(results, predictions, grid, config, workdir)
  common_runs.write_json(workdir / "results.json", results)
  (workdir / "table.md").write_text(reporting.markdown_report(results) + "\n")
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
  results["diagnostics"] = reporting.diagnostics_summary(results)
  results["figures"] = plotting.save_all(results, predictions, grid, config, workdir)
  return results
