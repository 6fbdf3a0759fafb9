"""Pre-training on CIFAR-10, fine-tuning on CIFAR-100, the sweep and the frontier.

The CIFAR-10 head stays out of fine-tuning and, frozen, measures CIFAR-10 after
it; every optimizer sees the same batches through ``make_train_step``.
"""

import dataclasses
import functools
import itertools
import os
import pathlib
import time
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

import optax_profit
from examples.cifar import frontier, input_pipeline, models, optimizers, reporting, runs
from examples.cifar.configs import default
from examples.cifar.input_pipeline import Data
from examples.common import baselines, compile_cache
from examples.common import runs as common_runs

Params = Any
Metrics = dict[str, Any]
# PROFIT's diagnostics in a train step's metrics (means: ``projected_fraction``, ...).
_DIAGNOSTICS = ("projected", "removed_fraction", "cosine")
NOT_IN_STEP = default.NOT_IN_STEP
# Pre-training reads the fine-tuning step's fields and its learning rate.
NOT_IN_PRETRAIN_STEP = tuple(f for f in NOT_IN_STEP if f != "pretrain_lr")


def make_loss_fn(config: default.Config, view=lambda p: p):
  """``loss_fn(params, batch) -> (mean cross-entropy, {"accuracy"})`` at ``view``."""
  backbone = models.backbone(config)

  def loss_fn(params: Params, batch: Metrics) -> tuple[jax.Array, Metrics]:
    logits = models.logits_fn(backbone, view(params), batch["image"])
    labels = batch["label"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, {"accuracy": accuracy}

  return loss_fn


@compile_cache.cached(NOT_IN_STEP, maxsize=8)
def _finetune_step(key, optimizer: str, lr: float, steps_per_epoch: int):
  opt = optimizers.create_optimizer(optimizer, lr, key, steps_per_epoch=steps_per_epoch)
  step = optax_profit.make_train_step(
    make_loss_fn(key, opt.loss_view), opt.tx, has_aux=True, cycle_length=key.n_ref + 1
  )
  return opt, step


@compile_cache.cached(NOT_IN_PRETRAIN_STEP, maxsize=4)
def _pretrain_step(key: default.Config):
  return optax_profit.make_train_step(
    make_loss_fn(key), optax.adam(key.pretrain_lr), has_aux=True, cycle_length=1
  )


@functools.lru_cache(maxsize=16)
def _eval_step(backbone: nn.Module):
  @jax.jit
  def step(params: Params, batch: Metrics) -> tuple[jax.Array, jax.Array]:
    logits = models.logits_fn(backbone, params, batch["image"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = jnp.argmax(logits, -1) == batch["label"]
    mask = batch["mask"]
    return jnp.sum(jnp.where(mask, ce, 0.0)), jnp.sum(correct & mask)

  return step


def evaluate(config, params, split: input_pipeline.Split) -> dict[str, float]:
  """Mean cross-entropy and accuracy on every image of ``split`` (NaN if empty)."""
  n = len(split.labels)
  if n == 0:
    return {"loss": float("nan"), "accuracy": float("nan")}
  step = _eval_step(models.backbone(config))
  totals = [
    step(params, batch)
    for batch in input_pipeline.eval_dataset(split, min(config.eval_batch_size, n))
  ]
  loss, correct = jax.device_get(jax.tree.map(lambda *x: sum(x), *totals))
  return {"loss": float(loss) / n, "accuracy": float(correct) / n}


def _eval_all(config, params, frozen_head, data: Data) -> Metrics:
  """Both test sets (CIFAR-10 with the frozen head), and the non-empty val splits."""
  old = {"backbone": params["backbone"], "head": frozen_head}
  out = {}
  for name, split, evaluated in (
    ("c100_test", data.c100_test, params),
    ("c10_test", data.c10_test, old),
    ("c100_val", data.c100_val, params),
    ("c10_val", data.c10_val, old),
  ):
    if name.endswith("test") or len(split.labels):
      m = evaluate(config, evaluated, split)
      out[f"{name}_loss"], out[f"{name}_accuracy"] = m["loss"], m["accuracy"]
  return out


def _iterate(ds: grain.MapDataset, threads: int):
  if threads > 0:
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    return iter(ds.to_iter_dataset(options))
  return (ds[i] for i in range(len(ds)))


def _train_epoch(step, params, opt_state, ds, *, desc: str, config: default.Config):
  """Runs ``step`` over ``ds``; returns params, state and the mean metrics."""
  losses, accuracies, diagnostics = [], [], []
  bar = tqdm.tqdm(
    total=len(ds), desc=desc, leave=False, disable=not config.progress, unit="step"
  )
  for i, batches in enumerate(_iterate(ds, config.data_threads)):
    params, opt_state, metrics = step(params, opt_state, batches)
    losses.append(metrics["loss"])
    accuracies.append(metrics["aux"]["accuracy"])
    if "projected" in metrics:
      diagnostics.append({k: metrics[k] for k in _DIAGNOSTICS})
    if config.progress and (i % 10 == 9 or i == len(ds) - 1):
      loss, acc = jax.device_get((losses[-1], accuracies[-1]))
      bar.set_postfix(loss=f"{np.mean(loss):.3f}", acc=f"{np.mean(acc):.3f}")
    bar.update()
  bar.close()
  losses, accuracies, diagnostics = jax.device_get((losses, accuracies, diagnostics))
  train = {
    "train_loss": float(np.mean(np.concatenate([np.ravel(x) for x in losses]))),
    "train_accuracy": float(np.mean(np.concatenate([np.ravel(x) for x in accuracies]))),
  }
  for k in _DIAGNOSTICS if diagnostics else ():
    name = "projected_fraction" if k == "projected" else k
    train[name] = float(np.mean([d[k] for d in diagnostics]))
  return params, opt_state, train


def pretrain(config: default.Config, workdir, data: Data) -> dict[str, Any]:
  """Pre-trains backbone + CIFAR-10 head with Adam, or loads the checkpoint."""
  name = runs.pretrain_name(config, data.sizes())
  directory = pathlib.Path(workdir) / "pretrain" / name
  checkpoints = common_runs.Checkpoints(directory)
  params = models.init_params(config, 10, jax.random.key(config.seed))
  state = {"params": params, "opt_state": optax.adam(config.pretrain_lr).init(params)}

  def c10_test(params: Params) -> Metrics:
    c10 = evaluate(config, params, data.c10_test)
    return {"c10_test_loss": c10["loss"], "c10_test_accuracy": c10["accuracy"]}

  resumed = common_runs.resume(checkpoints, state, lambda: c10_test(params))
  if resumed[0] and resumed[0] >= config.pretrain_epochs:
    tqdm.tqdm.write(f"Loaded the pre-trained {config.model} from {directory}.")
  step = _pretrain_step(config)
  batch_size = config.pretrain_batch_size or config.batch_size

  def epoch_fn(epoch, state, times):
    ds = input_pipeline.train_dataset(
      data.c10_train, batch_size, seed=config.seed, epoch=epoch
    )
    ds = ds.map(lambda b: jax.tree.map(lambda x: x[None], b))
    desc = f"pre-train {config.model} {epoch + 1}/{config.pretrain_epochs}"
    params, opt_state, train = _train_epoch(
      step, state["params"], state["opt_state"], ds, config=config, desc=desc
    )
    entry = {"epoch": epoch + 1, **train, **c10_test(params), **times()}
    return {"params": params, "opt_state": opt_state}, [entry]

  def log(epoch: int, e: Metrics) -> None:
    tqdm.tqdm.write(
      f"pre-train epoch {epoch + 1}: train loss {e['train_loss']:.3f} "
      f"acc {e['train_accuracy']:.3f}, CIFAR-10 test acc {e['c10_test_accuracy']:.4f}"
    )

  state, history, clock = common_runs.run_epochs(
    checkpoints, resumed, config.pretrain_epochs, config.checkpoint_every, epoch_fn, log
  )
  if resumed[0] < config.pretrain_epochs or not (directory / "curves.png").exists():
    common_runs.write_json(directory / "history.json", history)
    reporting.plot_pretraining(history, directory / "curves.png")
  out = {
    "params": state["params"],
    "c10_test_accuracy": history[-1]["c10_test_accuracy"],
    "c10_test_loss": history[-1]["c10_test_loss"],
    "epochs": config.pretrain_epochs,
    "history": history,
    "directory": str(directory),
    "wall_s": clock[0],
    "cpu_s": clock[1],
  }
  if len(data.c10_val.labels):
    out["c10_val_accuracy"] = evaluate(config, out["params"], data.c10_val)["accuracy"]
  return out


def wise_curve(config, pretrained_backbone, finetuned, frozen_head, data) -> list:
  """WiSE-FT: ``(1 - a) * pretrained + a * fine-tuned`` backbones, new heads kept."""
  curve = []
  for a in np.linspace(0.0, 1.0, config.wise_points):
    backbone = baselines.interpolate(
      pretrained_backbone, finetuned["backbone"], float(a)
    )
    params = {"backbone": backbone, "head": finetuned["head"]}
    curve.append({"a": float(a), **_eval_all(config, params, frozen_head, data)})
  return curve


def _main_steps(config: default.Config, optimizer: str, batches: int, warmup: int):
  """Optimizer steps after ``batches``: one per cycle for PROFIT after warm-up."""
  if optimizer != "profit":
    return batches
  cycles = max(batches - warmup, 0) // (config.n_ref + 1)
  return min(batches, warmup) + cycles


def _calls_per_epoch(config: default.Config, data: Data) -> int:
  """Train-step calls per fine-tuning epoch (each ``n_ref + 1`` batches)."""
  group = config.n_ref + 1
  calls = (len(data.c100_train.labels) // config.batch_size) // group
  if calls < config.evals_per_epoch:
    raise ValueError(
      f"`batch_size` * (`n_ref` + 1) * `evals_per_epoch` = "
      f"{config.batch_size * group * config.evals_per_epoch} exceeds the "
      f"{len(data.c100_train.labels)} CIFAR-100 training examples."
    )
  return calls


def _initial_state(config, pretrained, optimizer: str, lr: float, steps_per_epoch: int):
  """``(opt, compiled step, state)`` of a run: the pre-trained backbone, a new head."""
  opt, step = _finetune_step(config, optimizer, lr, steps_per_epoch)
  head = models.init_head(config, 100, jax.random.key(config.seed + 1))
  params = opt.wrap({"backbone": pretrained["params"]["backbone"], "head": head})
  frozen = pretrained["params"]["head"]
  state = {"params": params, "opt_state": opt.tx.init(params), "frozen_head": frozen}
  return opt, step, state


def finetune(config, workdir, data, pretrained, *, optimizer, lr, epochs) -> Metrics:
  """Fine-tunes :func:`pretrain`'s backbone and a new CIFAR-100 head, or loads it.

  The ``history`` has entry 0 before fine-tuning, then ``evals_per_epoch`` per epoch.
  """
  pre = pathlib.Path(pretrained["directory"]).name
  name = runs.finetune_name(config, data.sizes(), pre, optimizer, lr, epochs)
  directory = pathlib.Path(workdir) / "finetune" / name
  finished = common_runs.load_result(directory / "result.json")
  if finished is not None:
    tqdm.tqdm.write(f"{name}: finished earlier, loading {directory / 'result.json'}.")
    return finished
  group = config.n_ref + 1
  calls = _calls_per_epoch(config, data)
  opt, step, state = _initial_state(config, pretrained, optimizer, lr, calls * group)
  checkpoints = common_runs.Checkpoints(directory)
  view, head = opt.eval_view(state["params"], state["opt_state"]), state["frozen_head"]
  resumed = common_runs.resume(
    checkpoints,
    state,
    lambda: {**_eval_all(config, view, head, data), "batches_seen": 0, "main_steps": 0},
  )
  if resumed[0]:
    tqdm.tqdm.write(f"{name}: resuming after epoch {resumed[0]}.")
  warmup = config.warmup_epochs * calls * group
  bounds = np.linspace(0, calls, config.evals_per_epoch + 1).astype(int).tolist()
  desc = f"{optimizer} lr={lr:g} {{}}/{epochs}"

  def epoch_fn(epoch, state, times):
    """One epoch, evaluated ``evals_per_epoch`` times at evenly split calls."""
    ds = input_pipeline.train_dataset(
      data.c100_train, config.batch_size, seed=config.seed + 1, epoch=epoch, group=group
    )
    params, opt_state = state["params"], state["opt_state"]
    entries = []
    for part, (lo, hi) in enumerate(itertools.pairwise(bounds)):
      params, opt_state, train = _train_epoch(
        step, params, opt_state, ds[lo:hi], config=config, desc=desc.format(epoch + 1)
      )
      view = opt.eval_view(params, opt_state)
      batches = (epoch * calls + hi) * group
      entries.append(
        {
          "epoch": epoch + (part + 1) / config.evals_per_epoch,
          **train,
          **_eval_all(config, view, state["frozen_head"], data),
          "batches_seen": batches,
          "main_steps": _main_steps(config, optimizer, batches, warmup),
          **times(),
        }
      )
    entries[-1]["epoch"] = epoch + 1
    return {**state, "params": params, "opt_state": opt_state}, entries

  def log(epoch: int, e: Metrics) -> None:
    tqdm.tqdm.write(
      f"{name} epoch {epoch + 1}: train loss {e['train_loss']:.3f}, CIFAR-100 test "
      f"{e['c100_test_accuracy']:.4f}, CIFAR-10 test {e['c10_test_accuracy']:.4f}"
    )

  state, history, clock = common_runs.run_epochs(
    checkpoints, resumed, epochs, config.checkpoint_every, epoch_fn, log
  )
  result = runs.finetune_result(
    config, optimizer, lr, epochs, history, clock, directory
  )
  if config.wise_points:
    finetuned = opt.eval_view(state["params"], state["opt_state"])
    backbone = pretrained["params"]["backbone"]
    result["wise"] = wise_curve(config, backbone, finetuned, state["frozen_head"], data)
  common_runs.write_json(directory / "result.json", result)
  reporting.plot_curves([result], directory / "curves.png", title=name)
  return result


def load_finetuned(config, directory, data, pretrained, optimizer, lr) -> dict:
  """``{"backbone", "head", "frozen_head"}`` of a run folder's latest checkpoint."""
  del data  # The shapes come from the model; kept for the callers.
  opt, _, target = _initial_state(config, pretrained, optimizer, lr, 1)
  checkpoints = common_runs.Checkpoints(pathlib.Path(directory))
  _, state, _ = checkpoints.restore(target)
  checkpoints.close()
  trained = opt.eval_view(state["params"], state["opt_state"])
  return {
    "backbone": trained["backbone"],
    "head": trained["head"],
    "frozen_head": state["frozen_head"],
  }


def train_and_evaluate(config: default.Config, workdir) -> dict[str, Any]:
  """Pre-trains (or loads), runs the sweep, the frontier or one run, writes results."""
  default.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0, c0, load_start = time.perf_counter(), time.process_time(), os.getloadavg()
  data = input_pipeline.load_data(config)
  load_s = time.perf_counter() - t0
  pretrained = pretrain(config, workdir, data)
  results = {
    "config": dataclasses.asdict(config),
    "data_sizes": data.sizes(),
    "device": str(jax.devices()[0].device_kind),
    "pretrain": {k: v for k, v in pretrained.items() if k != "params"},
    "data_load_s": load_s,
  }

  def run(run_config, optimizer: str, lr: float, epochs: int = config.epochs):
    return finetune(
      run_config, workdir, data, pretrained, optimizer=optimizer, lr=lr, epochs=epochs
    )

  if config.frontier:
    if "c10_val_accuracy" not in pretrained:
      raise ValueError(
        "The frontier needs `c10_val_examples` > 0 (old-task validation)."
      )
    results.update(frontier.run(config, pretrained["c10_val_accuracy"], run))
    results["study_table"] = reporting.format_study(
      results["batch_size_study"], config.levels, results["frontier"]
    )
  else:
    results.update(runs.sweep(config, functools.partial(run, config)))
    results["table"] = reporting.format_table(results)
    results["runs_table"] = reporting.format_runs(results["runs"])
  results["wall_s"] = time.perf_counter() - t0
  results["cpu_s"] = time.process_time() - c0
  results["loadavg"] = {"start": load_start, "end": os.getloadavg()}
  reporting.write_results(config, workdir, results)
  return results
