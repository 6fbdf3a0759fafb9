"""The MLP, optimizers, training, WiSE-FT and evaluation of the toy example: train
steps (``optax_profit.make_train_step``) ``lax.scan``-ned in jitted chunks between
evaluations; curves count batches consumed."""

import dataclasses
import functools
import hashlib
import json
import math
import pathlib
import time

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

import optax_profit
from examples.common import baselines, compile_cache
from examples.common import runs as common_runs
from examples.toy_regression import input_pipeline, plotting, reporting, runs
from examples.toy_regression.configs import default

#: Only ``HEAD`` (the last Dense) trains in head-only fine-tuning.
HEAD = "head"
LAYERS = ("dense_1", "norm_1", "dense_2", "norm_2", HEAD)
EVAL_SETS = reporting.ERROR_KEYS
#: PROFIT's diagnostics logged along training (``profit_diagnostics``).
DIAGNOSTICS = ("removed_fraction", "cosine", "projected", "delta_norm")


class MLP(nn.Module):
  """``Dense -> LayerNorm -> ReLU`` twice, then ``Dense`` (paper, Appendix C.1)."""

  hidden: int = 500

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in (1, 2):
      x = nn.Dense(self.hidden, name=f"dense_{i}")(x)
      x = nn.relu(nn.LayerNorm(name=f"norm_{i}")(x))
    return jnp.squeeze(nn.Dense(1, name=HEAD)(x), axis=-1)


def init_params(model: MLP, rng: jax.Array) -> dict:
  return model.init(rng, jnp.zeros((1, 2), jnp.float32))


def rmsprop(config, lr: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """RMSProp with PyTorch's semantics (eps outside the square root)."""
  decay, eps = config.rmsprop_decay, config.rmsprop_eps
  return optax.rmsprop(lr, decay=decay, eps=eps, eps_in_sqrt=False)


def _staircase(init: float, every: float, rate: float) -> optax.Schedule:
  return optax.exponential_decay(init, max(1, round(every)), rate, staircase=True)


def base_optimizer(config) -> optax.GradientTransformation:
  c = config
  return rmsprop(c, _staircase(c.base_lr, c.base_decay_every, c.base_decay_rate))


def finetune_optimizer(spec, config, lr=None, ratio=None):
  """RMSProp with the staircase decay on every layer (``full``, ``l2sp``, whose
  penalty is in the loss) or on the head (``head``), or inside PROFIT with SGD
  reference steps at ``lr / ratio``; ``lr``, ``ratio`` override the spec's and
  may be traced (one compiled step then serves every value)."""
  lr = spec.lr if lr is None else lr
  ratio = spec.ratio if ratio is None else ratio
  every = config.ft_decay_every
  if spec.method == "profit" and spec.convention == "batches":
    every = config.ft_decay_every / (config.n_ref + 1)  # in main steps
  schedule = _staircase(lr, every, config.ft_decay_rate)
  main = rmsprop(config, schedule)
  if spec.method in ("full", "l2sp"):
    return main
  if spec.method == "head":
    label = lambda path, _: "train" if HEAD in path else "freeze"
    labels = functools.partial(flax.traverse_util.path_aware_map, label)
    return optax.multi_transform({"train": main, "freeze": optax.set_to_zero()}, labels)
  ref = lambda count: schedule(count // config.n_ref) / ratio  # n_ref per cycle
  kw = dict(n_ref=config.n_ref, storage=config.storage, delta_dtype=config.delta_dtype)
  return optax_profit.profit(main, ref=ref, **kw)


def make_loss_fn(model):
  """Mean squared error of ``model`` on a batch ``{"x", "y"}``."""
  return lambda params, b: jnp.mean((model.apply(params, b["x"]) - b["y"]) ** 2)


def l2sp_penalty(params, pre, alpha) -> jax.Array:
  """L2-SP's ``alpha / 2 * ||theta - theta_pre||^2`` over every layer but the head."""

  def backbone(tree) -> dict:
    flat = flax.traverse_util.flatten_dict(tree)
    return {"/".join(k): v for k, v in flat.items() if HEAD not in k}

  return baselines.l2sp_penalty(backbone(params), backbone(pre), alpha)


def make_l2sp_loss_fn(model, pre, alpha):
  """The new-data MSE plus :func:`l2sp_penalty` towards ``pre``."""
  mse = make_loss_fn(model)
  return lambda params, batch: mse(params, batch) + l2sp_penalty(params, pre, alpha)


def make_chunk_fn(model, make_tx, length: int, l2sp: bool = False):
  """Jitted ``chunk(params, opt_state, pre, x, y, idx, lr, ratio, alpha)``: the
  train step scanned over ``idx [calls, length, batch_size]`` (indices of x, y)."""

  def chunk(params, opt_state, pre, x, y, idx, lr, ratio, alpha):
    loss_fn = make_l2sp_loss_fn(model, pre, alpha) if l2sp else make_loss_fn(model)
    step = optax_profit.make_train_step(
      loss_fn, make_tx(lr, ratio), cycle_length=length
    )

    def body(carry, cycle_idx):
      *carry, metrics = step(*carry, {"x": x[cycle_idx], "y": y[cycle_idx]})
      return tuple(carry), metrics

    (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), idx)
    return params, opt_state, metrics

  return jax.jit(chunk, donate_argnums=(0, 1))


def compile_key(spec) -> tuple[str, str | None]:
  """Runs with the same key share one compiled chunk (lr, ratio are traced)."""
  return spec.method, spec.convention


@compile_cache.cached()  # keyed on the whole config
def _finetune_chunk_fn(config, model, method: str, convention: str | None):
  profit, l2sp = method == "profit", method == "l2sp"
  ratio, alpha = (1.0 if profit else None), (1.0 if l2sp else None)
  spec = runs.RunSpec(method, 1.0, 1, ratio, convention, alpha)  # Traced values.
  make_tx = functools.partial(finetune_optimizer, spec, config)
  return make_chunk_fn(model, make_tx, runs.cycle_length(spec, config), l2sp=l2sp)


@compile_cache.cached(maxsize=4)  # keyed on the whole config
def _base_chunk_fn(config, model):
  tx = base_optimizer(config)
  return make_chunk_fn(model, lambda lr, ratio: tx, 1)


@functools.lru_cache(maxsize=4)
def make_errors_fn(model):
  """``errors(params, data)``: ``{name: MSE}`` of ``model`` on :data:`EVAL_SETS`."""
  loss_fn = make_loss_fn(model)
  mses = jax.jit(lambda params, sets: jnp.stack([loss_fn(params, s) for s in sets]))

  def errors(params, data: input_pipeline.Datasets) -> dict:
    splits = (data.old_test, data.new_test, data.old_val, data.new_val)
    values = mses(params, [{"x": s.x, "y": s.y} for s in splits])
    return dict(zip(EVAL_SETS, np.asarray(values, np.float64).tolist(), strict=True))

  return errors


def eval_weights(params, opt_state):
  """The weights to evaluate: ``optax_profit.eval_params`` for PROFIT."""
  if optax_profit.profit_diagnostics(opt_state):  # holds a ProfitState
    return optax_profit.eval_params(params, opt_state)
  return params


def _sampler(config, batch_size: int, seed: int, name: str):
  digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
  child = int.from_bytes(digest[:4], "little")
  return input_pipeline.EpochSampler(config.n_train, batch_size, seed=child)


def train_base(model, params, data, config, seed: int):
  """Trains ``params`` (donated) on the original data for ``base_steps`` batches."""
  opt_state = base_optimizer(config).init(params)
  chunk_fn = _base_chunk_fn(config, model)
  unused = jnp.zeros((), jnp.float32)
  sampler = _sampler(config, config.batch_size, seed, "base")
  x, y = jnp.asarray(data.old_train.x), jnp.asarray(data.old_train.y)
  steps, desc = config.base_steps, f"seed {seed} base"
  with tqdm.tqdm(total=steps, desc=desc, unit="step", leave=False) as bar:
    for done in range(0, steps, 500):
      idx = sampler.next_indices(min(500, steps - done))[:, None, :]
      params, opt_state, metrics = chunk_fn(
        params, opt_state, unused, x, y, idx, unused, unused, unused
      )
      bar.update(len(idx))
      bar.set_postfix(loss=f"{float(jnp.mean(metrics['loss'])):.3f}")
  return params


def load_or_train_base(model, data, config, seed: int, workdir: pathlib.Path):
  """``(params, info)``: the base model of ``seed``, loaded or trained and saved."""
  init = init_params(model, jax.random.key(seed))
  cache = runs.base_cache_dir(workdir, config, seed).absolute()
  params = runs.load_base(cache, init)
  loaded = params is not None
  info = {"seed": seed, "path": str(cache), "loaded_from_cache": loaded}
  info["train_seconds"] = 0.0
  if loaded:
    message = f"loaded the cached base model from {cache} (skipping pre-training)"
  else:
    start = time.perf_counter()
    params = jax.block_until_ready(train_base(model, init, data, config, seed))
    info["train_seconds"] = seconds = time.perf_counter() - start
    runs.save_base(cache, params, runs.base_cache_key(config, seed))
    message = f"trained the base model in {seconds:.1f} s, cached in {cache}"
  tqdm.tqdm.write(f"seed {seed}: {message}")
  return params, info


def finetune(spec, chunk_fn, errors_fn, base_params, data, config, seed: int):
  """Fine-tunes a copy of ``base_params`` on the new data: ``(params, record)``.

  Evaluations: every ``eval_early`` batches up to ``eval_every``, then every
  ``eval_every`` batches, and at the end; PROFIT's :data:`DIAGNOSTICS` are
  averaged over all main steps, the first tenth and the second half.
  """
  values = spec.lr, spec.ratio or 1.0, spec.alpha or 0.0  # lr, ratio, alpha
  scalars = [jnp.asarray(v, jnp.float32) for v in values]
  params = jax.tree.map(jnp.copy, base_params)
  opt_state = finetune_optimizer(spec, config).init(params)
  length, calls = runs.cycle_length(spec, config), runs.num_calls(spec, config)
  per_chunk = max(1, math.ceil(min(config.eval_early, config.eval_every) / length))
  sampler = _sampler(config, spec.batch_size, seed, "finetune")
  x, y = jnp.asarray(data.new_train.x), jnp.asarray(data.new_train.y)
  curve = [{"batches": 0, "main_steps": 0, **errors_fn(params, data)}]
  diag_curve, logged = [], {k: [] for k in DIAGNOSTICS}
  done = last = 0  # calls done, at the last evaluation
  every, desc = config.eval_every, f"seed {seed} {spec.name}"
  with tqdm.tqdm(total=calls * length, desc=desc, unit="batch", leave=False) as bar:
    while done < calls:
      k = min(per_chunk, calls - done)
      idx = sampler.next_indices(k * length).reshape(k, length, -1)
      params, opt_state, metrics = chunk_fn(
        params, opt_state, base_params, x, y, idx, *scalars
      )
      for key in DIAGNOSTICS if "removed_fraction" in metrics else ():
        logged[key].append(np.asarray(metrics[key], np.float64))
      done += k
      bar.update(k * length)
      batches = done * length
      due = batches <= every or batches // every > last * length // every
      if not (due or done == calls):
        continue
      errors = errors_fn(eval_weights(params, opt_state), data)
      curve.append({"batches": batches, "main_steps": done, **errors})
      if logged["removed_fraction"]:
        means = {k: float(np.mean(np.concatenate(v)[last:])) for k, v in logged.items()}
        diag_curve.append({"batches": batches, **means})
      last = done
      bar.set_postfix(**{key[:3]: f"{errors[key]:.3f}" for key in EVAL_SETS[:2]})
  columns = lambda rows: {k: [row[k] for row in rows] for k in rows[0]}
  record = {"batches": calls * length, "main_steps": calls}
  record |= {key: curve[-1][key] for key in EVAL_SETS} | {"curve": columns(curve)}
  if diag_curve:
    values = {k: np.concatenate(v) for k, v in logged.items()}
    n = len(values["removed_fraction"])
    parts = {"": slice(None), "_early": slice(0, max(1, n // 10))}
    parts["_late"] = slice(n // 2, None)
    record["diagnostics"] = {
      f"{key}{suffix}": float(np.mean(values[key][part]))
      for key in DIAGNOSTICS
      for suffix, part in parts.items()
    }
    record["diag_curve"] = columns(diag_curve)
  return eval_weights(params, opt_state), record


def wise_curve(errors_fn, base_params, tuned, data, points: int) -> dict:
  """Errors of WiSE-FT's interpolations at ``points`` values of ``a`` in [0, 1]."""
  mix = np.linspace(0.0, 1.0, points).tolist()
  errors = [errors_fn(baselines.interpolate(base_params, tuned, a), data) for a in mix]
  return {"a": mix, **{k: [e[k] for e in errors] for k in EVAL_SETS}}


def train_and_evaluate(config, workdir: str | pathlib.Path) -> dict:
  """Runs the experiment (or loads its finished runs), writes ``workdir``."""
  default.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  model = MLP(hidden=config.hidden)
  errors_fn, predict = make_errors_fn(model), jax.jit(model.apply)
  specs = runs.all_specs(config)
  grid = plotting.make_grid(dataclasses.asdict(config))
  base_info, records = [], {s.name: [] for s in specs}
  table_runs = {row: s.name for row, s in runs.table_specs(config).items()}
  table_rows = {name: row for row, name in table_runs.items()}
  predictions, resumed = {}, 0
  names = ("n_train", "n_test", "n_val", "old_domain", "new_domain", "noise_std")
  for i, seed in enumerate(config.seeds):
    data = input_pipeline.make_datasets(seed, **{n: getattr(config, n) for n in names})
    base_params, info = load_or_train_base(model, data, config, seed, workdir)
    base_info.append(info | errors_fn(base_params, data))
    if i == 0:
      predictions["baseline"] = np.asarray(predict(base_params, grid))
    for spec in specs:
      row = table_rows.get(spec.name) if i == 0 else None
      path = runs.run_path(workdir, config, spec, seed)
      record = runs.load_run(path, with_predictions=row and config.plot_grid)
      if record is not None:
        resumed += 1
        prediction = record.pop("predictions", None)
      else:
        chunk_fn = _finetune_chunk_fn(config, model, *compile_key(spec))
        params, record = finetune(
          spec, chunk_fn, errors_fn, base_params, data, config, seed
        )
        if spec.method in ("full", "profit"):
          points = config.wise_points
          record["wise"] = wise_curve(errors_fn, base_params, params, data, points)
        record["seed"] = seed
        prediction = np.asarray(predict(params, grid)) if row else None
        runs.save_run(path, record, prediction)
      records[spec.name].append(record)
      if row:
        predictions[row] = prediction
  if resumed:
    tqdm.tqdm.write(f"loaded {resumed} finished runs from {workdir / 'runs'}")
  results = reporting.assemble(config, specs, table_runs, base_info, records)
  results |= dict(wall_seconds=time.perf_counter() - start, resumed_runs=resumed)
  results["device"] = str(jax.devices()[0].device_kind)
  np.savez_compressed(workdir / "predictions.npz", grid=grid, **predictions)
  results["figures"] = plotting.save_all(results, predictions, grid, workdir)
  common_runs.write_json(workdir / "results.json", results)
  (workdir / "table.md").write_text(reporting.markdown_report(results) + "\n")
  return results


def replot(workdir: str | pathlib.Path) -> dict:
  """Redraws the figures of a finished run from its saved outputs."""
  workdir = pathlib.Path(workdir)
  results = json.loads((workdir / "results.json").read_text())
  with np.load(workdir / "predictions.npz") as saved:
    grid = saved["grid"]
    predictions = {k: saved[k] for k in saved.files if k != "grid"}
  results["figures"] = plotting.save_all(results, predictions, grid, workdir)
  return results
