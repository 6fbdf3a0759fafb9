"""Pre-training on CIFAR-10, fine-tuning on CIFAR-100, and the Table 2 sweep.

The model is a backbone with two linear heads (``models.py``). Pre-training
trains backbone + CIFAR-10 head with Adam (paper: lr 1e-4) and is checkpointed
with orbax under ``<workdir>/pretrain/<name>``; every fine-tuning run with the
same pre-training settings reuses it. Fine-tuning trains backbone + a new
CIFAR-100 head (or the head alone with ``head_only``); the CIFAR-10 head is
kept out of the optimizer, so it is bit-identical after fine-tuning. "CIFAR-10
accuracy after fine-tuning" is the fine-tuned backbone with that frozen
CIFAR-10 head (the paper does not spell out how it measures it).

Every optimizer goes through ``optax_profit.make_train_step``: one call
consumes ``n_ref + 1`` stacked batches (one PROFIT cycle; for the other
optimizers simply ``n_ref + 1`` ordinary steps), so every optimizer sees the
same batches in the same order. Runs checkpoint with an orbax
``CheckpointManager`` and resume from the latest checkpoint; a finished run
leaves ``result.json`` and is not run again (naming and caching: ``runs.py``).

The frontier mode (``config.frontier``) fine-tunes every family of forgetting
remedies with the same batch budget (full fine-tuning, L2-SP, LP-FT, head
only, PROFIT, and WiSE-FT of the full and the PROFIT runs) and tabulates the
best CIFAR-100 accuracy reachable at each CIFAR-10 level (``frontier.py``).
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
from examples.cifar import (
  frontier,
  input_pipeline,
  models,
  optimizers,
  reporting,
  runs,
  sweep,
)
from examples.cifar.configs import default
from examples.cifar.input_pipeline import Data
from examples.common import baselines, compile_cache
from examples.common import runs as common_runs

Params = Any
Metrics = dict[str, Any]


# ----------------------------------------------------------------------------
# Model functions.


_backbone = models.backbone
init_params = models.init_params
init_head = models.init_head
logits_fn = models.logits_fn


def make_loss_fn(config: default.Config, view=lambda p: p):
  """``loss_fn(params, batch) -> (mean cross-entropy, {"accuracy"})``.

  Args:
    config: supplies the model.
    view: maps the optimizer's params to ``{"backbone", "head"}`` (Lookahead's
      fast weights).

  Returns:
    The loss function for ``optax_profit.make_train_step(..., has_aux=True)``.
  """

  backbone = _backbone(config)

  def loss_fn(params: Params, batch: Metrics) -> tuple[jax.Array, Metrics]:
    logits = logits_fn(backbone, view(params), batch["image"])
    labels = batch["label"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, {"accuracy": accuracy}

  return loss_fn


@functools.lru_cache(maxsize=16)
def _eval_step(backbone: nn.Module):
  @jax.jit
  def step(params: Params, batch: Metrics) -> tuple[jax.Array, jax.Array]:
    logits = logits_fn(backbone, params, batch["image"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = jnp.argmax(logits, -1) == batch["label"]
    mask = batch["mask"]
    return jnp.sum(jnp.where(mask, ce, 0.0)), jnp.sum(correct & mask)

  return step


def evaluate(
  config: default.Config, params: Params, split: input_pipeline.Split
) -> dict[str, float]:
  """Mean cross-entropy and accuracy of ``params`` on every image of ``split``.

  Args:
    config: supplies the model and ``eval_batch_size``.
    params: ``{"backbone": ..., "head": ...}``.
    split: the examples (not augmented).

  Returns:
    ``{"loss": ..., "accuracy": ...}`` (NaN for an empty split).
  """
  n = len(split.labels)
  if n == 0:
    return {"loss": float("nan"), "accuracy": float("nan")}
  step = _eval_step(_backbone(config))
  totals = [
    step(params, batch)
    for batch in input_pipeline.eval_dataset(split, min(config.eval_batch_size, n))
  ]
  loss, correct = jax.device_get(jax.tree.map(lambda *x: sum(x), *totals))
  return {"loss": float(loss) / n, "accuracy": float(correct) / n}


# ----------------------------------------------------------------------------
# Training loop helpers.


def _iterate(ds: grain.MapDataset, threads: int):
  if threads > 0:
    return iter(
      ds.to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
      )
    )
  return (ds[i] for i in range(len(ds)))


def _train_epoch(step, params, opt_state, ds, *, desc: str, config: default.Config):
  """Runs ``step`` over the calls of ``ds``; returns params, state and mean metrics.

  The metrics are the mean training loss and accuracy and, for PROFIT, the
  mean of each main step's diagnostics: the fraction of main steps whose
  gradient was projected, ``removed_fraction`` (``||g - g'|| / ||g||``) and
  ``cosine`` (between the main gradient and the displacement ``delta``).
  """
  losses, accuracies, diagnostics = [], [], []
  bar = tqdm.tqdm(
    total=len(ds), desc=desc, leave=False, disable=not config.progress, unit="step"
  )
  for i, batches in enumerate(_iterate(ds, config.data_threads)):
    params, opt_state, metrics = step(params, opt_state, batches)
    losses.append(metrics["loss"])
    accuracies.append(metrics["aux"]["accuracy"])
    if "projected" in metrics:
      diagnostics.append(
        {k: metrics[k] for k in ("projected", "removed_fraction", "cosine")}
      )
    if config.progress and (i % 10 == 9 or i == len(ds) - 1):
      recent_loss, recent_acc = jax.device_get((losses[-1], accuracies[-1]))
      bar.set_postfix(
        loss=f"{np.mean(recent_loss):.3f}", acc=f"{np.mean(recent_acc):.3f}"
      )
    bar.update()
  bar.close()
  losses, accuracies, diagnostics = jax.device_get((losses, accuracies, diagnostics))
  train = {
    "train_loss": float(np.mean(np.concatenate([np.ravel(x) for x in losses]))),
    "train_accuracy": float(np.mean(np.concatenate([np.ravel(x) for x in accuracies]))),
  }
  if diagnostics:
    train["projected_fraction"] = float(np.mean([d["projected"] for d in diagnostics]))
    train["removed_fraction"] = float(
      np.mean([d["removed_fraction"] for d in diagnostics])
    )
    train["cosine"] = float(np.mean([d["cosine"] for d in diagnostics]))
  return params, opt_state, train


def _log(config: default.Config, text: str) -> None:
  del config  # Epoch lines are printed with or without progress bars.
  tqdm.tqdm.write(text)


# ----------------------------------------------------------------------------
# Pre-training.


def pretrain_name(config: default.Config, data: Data) -> str:
  """Folder name of the pre-training run (see ``runs.pretrain_name``)."""
  return runs.pretrain_name(config, data.sizes())


def pretrain(
  config: default.Config, workdir: str | pathlib.Path, data: Data
) -> dict[str, Any]:
  """Pre-trains backbone + CIFAR-10 head with Adam, or loads the checkpoint.

  Args:
    config: supplies the model, ``pretrain_epochs``, ``pretrain_lr``,
      ``pretrain_batch_size`` (or ``batch_size``) and ``seed``.
    workdir: the output folder; the run lives in
      ``<workdir>/pretrain/<pretrain_name>`` and resumes from its latest
      checkpoint.
    data: the splits.

  Returns:
    ``{"params": {"backbone", "head"}, "c10_test_accuracy", "c10_test_loss",
    "c10_val_accuracy" (when there is a CIFAR-10 validation split),
    "history", "directory", "wall_s"}``.
  """
  directory = pathlib.Path(workdir) / "pretrain" / pretrain_name(config, data)
  checkpoints = common_runs.Checkpoints(directory)
  params = init_params(config, 10, jax.random.key(config.seed))
  state = {"params": params, "opt_state": optax.adam(config.pretrain_lr).init(params)}

  def c10_test(params: Params) -> Metrics:
    c10 = evaluate(config, params, data.c10_test)
    return {"c10_test_loss": c10["loss"], "c10_test_accuracy": c10["accuracy"]}

  start, state, history, clock = common_runs.resume(
    checkpoints, state, lambda: c10_test(state["params"])
  )
  if start and start >= config.pretrain_epochs:
    _log(config, f"Loaded the pre-trained {config.model} from {directory}.")
  step = _pretrain_step(config)
  params, opt_state = state["params"], state["opt_state"]
  batch_size = runs.pretrain_batch_size(config)
  for epoch in range(start, config.pretrain_epochs):
    t0 = (time.perf_counter(), time.process_time())
    ds = input_pipeline.train_dataset(
      data.c10_train, batch_size, seed=config.seed, epoch=epoch
    )
    ds = ds.map(lambda b: jax.tree.map(lambda x: x[None], b))
    params, opt_state, train = _train_epoch(
      step,
      params,
      opt_state,
      ds,
      config=config,
      desc=f"pre-train {config.model} {epoch + 1}/{config.pretrain_epochs}",
    )
    c10 = c10_test(params)
    history.append(
      {
        "epoch": epoch + 1,
        **train,
        **c10,
        "wall_s": clock[0] + time.perf_counter() - t0[0],
        "cpu_s": clock[1] + time.process_time() - t0[1],
      }
    )
    state = {"params": params, "opt_state": opt_state}
    due = runs.checkpoint_due(config, epoch + 1, config.pretrain_epochs)
    common_runs.end_epoch(checkpoints, epoch + 1, due, state, history, clock, t0)
    _log(
      config,
      f"pre-train epoch {epoch + 1}: train loss {train['train_loss']:.3f} "
      f"acc {train['train_accuracy']:.3f}, CIFAR-10 test acc "
      f"{c10['c10_test_accuracy']:.4f}",
    )
  if start < config.pretrain_epochs or not (directory / "curves.png").exists():
    common_runs.write_json(directory / "history.json", history)
    reporting.plot_pretraining(history, directory / "curves.png")
  checkpoints.close()
  out = {
    "params": params,
    "c10_test_accuracy": history[-1]["c10_test_accuracy"],
    "c10_test_loss": history[-1]["c10_test_loss"],
    "epochs": config.pretrain_epochs,
    "history": history,
    "directory": str(directory),
    "wall_s": clock[0],
    "cpu_s": clock[1],
  }
  if len(data.c10_val.labels):
    out["c10_val_accuracy"] = evaluate(config, params, data.c10_val)["accuracy"]
  return out


# ----------------------------------------------------------------------------
# Fine-tuning.


NOT_IN_STEP = default.NOT_IN_STEP


@compile_cache.cached(NOT_IN_STEP, maxsize=8)
def _finetune_step(
  key: default.Config, optimizer: str, lr: float, steps_per_epoch: int
):
  opt = optimizers.create_optimizer(optimizer, lr, key, steps_per_epoch=steps_per_epoch)
  step = optax_profit.make_train_step(
    make_loss_fn(key, opt.loss_view),
    opt.tx,
    has_aux=True,
    cycle_length=key.n_ref + 1,
  )
  return opt, step


# Pre-training reads the fine-tuning step's fields and its learning rate.
NOT_IN_PRETRAIN_STEP = tuple(f for f in NOT_IN_STEP if f != "pretrain_lr")


@compile_cache.cached(NOT_IN_PRETRAIN_STEP, maxsize=4)
def _pretrain_step(key: default.Config):
  return optax_profit.make_train_step(
    make_loss_fn(key), optax.adam(key.pretrain_lr), has_aux=True, cycle_length=1
  )


def finetune_name(
  config: default.Config, data: Data, optimizer: str, lr: float, epochs: int
) -> str:
  """Folder name of a fine-tuning run (see ``runs.finetune_name``)."""
  return runs.finetune_name(
    config, data.sizes(), pretrain_name(config, data), optimizer, lr, epochs
  )


def _eval_all(
  config: default.Config, params: Params, frozen_head: Params, data: Data
) -> Metrics:
  c100 = evaluate(config, params, data.c100_test)
  old = {"backbone": params["backbone"], "head": frozen_head}
  c10 = evaluate(config, old, data.c10_test)
  out = {
    "c100_test_loss": c100["loss"],
    "c100_test_accuracy": c100["accuracy"],
    "c10_test_loss": c10["loss"],
    "c10_test_accuracy": c10["accuracy"],
  }
  if len(data.c100_val.labels):
    val = evaluate(config, params, data.c100_val)
    out.update(c100_val_loss=val["loss"], c100_val_accuracy=val["accuracy"])
  if len(data.c10_val.labels):
    val = evaluate(config, old, data.c10_val)
    out.update(c10_val_loss=val["loss"], c10_val_accuracy=val["accuracy"])
  return out


def wise_curve(
  config: default.Config,
  pretrained_backbone: Params,
  finetuned: Params,
  frozen_head: Params,
  data: Data,
) -> list[Metrics]:
  """WiSE-FT: the evaluations of ``(1 - a) * pretrained + a * fine-tuned``.

  Only the backbone is interpolated: the new CIFAR-100 head has no
  pre-trained value, so every point uses the *fine-tuned* head (at ``a = 0``
  the pre-trained backbone with the head trained on the moving features).
  CIFAR-10 uses the frozen CIFAR-10 head, so ``a = 0`` is the pre-trained
  model there.

  Args:
    config: supplies ``wise_points`` (evenly spaced ``a`` in [0, 1]).
    pretrained_backbone: the pre-trained backbone params.
    finetuned: the fine-tuned ``{"backbone", "head"}``.
    frozen_head: the CIFAR-10 head.
    data: the splits.

  Returns:
    One evaluation (as in the history) per ``a``, with ``a`` added.
  """
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
  params = opt.wrap(
    {
      "backbone": pretrained["params"]["backbone"],
      "head": init_head(config, 100, jax.random.key(config.seed + 1)),
    }
  )
  state = {
    "params": params,
    "opt_state": opt.tx.init(params),
    "frozen_head": pretrained["params"]["head"],
  }
  return opt, step, state


def _finetune_epoch(config, data, opt, step, state, run, epoch, clock):
  """One fine-tuning epoch, evaluated ``evals_per_epoch`` times.

  Args:
    config: the run's configuration.
    data: the splits.
    opt: the run's :class:`optimizers.Optimizer`.
    step: its compiled train step.
    state: ``(params, opt_state, frozen_head)``.
    run: ``(name, optimizer, lr, epochs, train-step calls per epoch)``.
    epoch: the epoch (0-based).
    clock: the run's ``[wall_s, cpu_s]`` before the epoch and the epoch's
      start ``(perf_counter, process_time)``.

  Returns:
    ``(params, opt_state, history entries)``; evaluation points split the
    epoch's calls as evenly as possible.
  """
  _, optimizer, lr, epochs, calls = run
  desc = f"{optimizer} lr={lr:g} {epoch + 1}/{epochs}"
  warmup = config.warmup_epochs * calls * (config.n_ref + 1)
  params, opt_state, frozen_head = state
  clock, start = clock
  group = config.n_ref + 1
  ds = input_pipeline.train_dataset(
    data.c100_train, config.batch_size, seed=config.seed + 1, epoch=epoch, group=group
  )
  bounds = np.linspace(0, calls, config.evals_per_epoch + 1).astype(int)
  entries = []
  for part, (lo, hi) in enumerate(itertools.pairwise(bounds)):
    params, opt_state, train = _train_epoch(
      step, params, opt_state, ds[int(lo) : int(hi)], config=config, desc=desc
    )
    metrics = _eval_all(config, opt.eval_view(params, opt_state), frozen_head, data)
    batches = (epoch * calls + int(hi)) * group
    entries.append(
      {
        "epoch": epoch + (part + 1) / config.evals_per_epoch,
        **train,
        **metrics,
        "batches_seen": batches,
        "main_steps": _main_steps(config, optimizer, batches, warmup),
        "wall_s": clock[0] + time.perf_counter() - start[0],
        "cpu_s": clock[1] + time.process_time() - start[1],
      }
    )
  entries[-1]["epoch"] = epoch + 1
  return params, opt_state, entries


def finetune(
  config: default.Config,
  workdir: str | pathlib.Path,
  data: Data,
  pretrained: dict[str, Any],
  *,
  optimizer: str,
  lr: float,
  epochs: int,
) -> dict[str, Any]:
  """Fine-tunes the pre-trained backbone and a new CIFAR-100 head.

  Args:
    config: supplies ``batch_size``, ``n_ref``, ``ratio``, ``head_only``,
      ``warmup_epochs``, ``l2sp_alpha``, ``lp_epochs``, ``evals_per_epoch``,
      ``wise_points``, ``seed`` and the optimizers' settings.
    workdir: the output folder; the run lives in
      ``<workdir>/finetune/<finetune_name>``, checkpoints every
      ``checkpoint_every`` epochs and resumes from the latest checkpoint. A
      finished run (``result.json``) is loaded, not run again.
    data: the splits.
    pretrained: the dict returned by :func:`pretrain`.
    optimizer: ``sgd``, ``adam``, ``lookahead``, ``adan`` or ``profit``.
    lr: the (main) learning rate.
    epochs: passes over the CIFAR-100 training data.

  Returns:
    The run's result: settings, ``history`` (``evals_per_epoch`` entries per
    epoch, indexed by ``batches_seen``; entry 0 is before fine-tuning),
    ``final`` metrics, ``wise`` (the WiSE-FT curve, when ``wise_points``),
    ``batches_seen``, ``main_steps``, ``wall_s`` and ``directory``.
  """
  name = runs.finetune_name(
    config,
    data.sizes(),
    pathlib.Path(pretrained["directory"]).name,
    optimizer,
    lr,
    epochs,
  )
  directory = pathlib.Path(workdir) / "finetune" / name
  finished = common_runs.load_result(directory / "result.json")
  if finished is not None:
    _log(config, f"{name}: finished earlier, loading {directory / 'result.json'}.")
    return finished
  group = config.n_ref + 1
  calls_per_epoch = _calls_per_epoch(config, data)
  opt, step, state = _initial_state(
    config, pretrained, optimizer, lr, calls_per_epoch * group
  )
  params, frozen_head = state["params"], state["frozen_head"]
  checkpoints = common_runs.Checkpoints(directory)
  view = opt.eval_view(params, state["opt_state"])
  start, state, history, clock = common_runs.resume(
    checkpoints,
    state,
    lambda: {
      **_eval_all(config, view, frozen_head, data),
      "batches_seen": 0,
      "main_steps": 0,
    },
  )
  if start:
    _log(config, f"{name}: resuming after epoch {start}.")
  params, opt_state, frozen_head = (
    state["params"],
    state["opt_state"],
    state["frozen_head"],
  )
  run = (name, optimizer, lr, epochs, calls_per_epoch)
  for epoch in range(start, epochs):
    t0 = (time.perf_counter(), time.process_time())
    params, opt_state, entries = _finetune_epoch(
      config, data, opt, step, (params, opt_state, frozen_head), run, epoch, (clock, t0)
    )
    history += entries
    state = {"params": params, "opt_state": opt_state, "frozen_head": frozen_head}
    due = runs.checkpoint_due(config, epoch + 1, epochs)
    common_runs.end_epoch(checkpoints, epoch + 1, due, state, history, clock, t0)
    _log(
      config,
      f"{name} epoch {epoch + 1}: train loss {entries[-1]['train_loss']:.3f}, "
      f"CIFAR-100 test {entries[-1]['c100_test_accuracy']:.4f}, CIFAR-10 test "
      f"{entries[-1]['c10_test_accuracy']:.4f}",
    )
  checkpoints.close()
  result = runs.finetune_result(
    config, optimizer, lr, epochs, history, clock, directory
  )
  if config.wise_points:
    finetuned = opt.eval_view(params, opt_state)
    backbone = pretrained["params"]["backbone"]
    result["wise"] = wise_curve(config, backbone, finetuned, frozen_head, data)
  common_runs.write_json(directory / "result.json", result)
  reporting.plot_curves([result], directory / "curves.png", title=name)
  return result


def load_finetuned(
  config: default.Config,
  directory: str | pathlib.Path,
  data: Data,
  pretrained: dict[str, Any],
  optimizer: str,
  lr: float,
) -> dict[str, Params]:
  """The fine-tuned model of a run folder, from its latest checkpoint.

  Args:
    config: the run's configuration.
    directory: the run's folder (``result["directory"]``).
    data: the splits (for the optimizer's shapes).
    pretrained: the dict returned by :func:`pretrain`.
    optimizer: the run's optimizer.
    lr: the run's learning rate.

  Returns:
    ``{"backbone", "head" (CIFAR-100), "frozen_head" (CIFAR-10)}``.
  """
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


# ----------------------------------------------------------------------------
# The Table 2 sweep.


def _frontier(
  config: default.Config, workdir: pathlib.Path, data: Data, pretrained: dict[str, Any]
) -> dict[str, Any]:
  """The frontier at ``batch_size`` over ``seeds``, then the batch-size study."""
  if "c10_val_accuracy" not in pretrained:
    raise ValueError("The frontier needs `c10_val_examples` > 0 (old-task validation).")

  def run(run_config: default.Config, optimizer: str, lr: float) -> dict[str, Any]:
    return finetune(
      run_config,
      workdir,
      data,
      pretrained,
      optimizer=optimizer,
      lr=lr,
      epochs=config.epochs,
    )

  results = frontier.run(config, pretrained["c10_val_accuracy"], run)
  results["study_table"] = reporting.format_study(
    results["batch_size_study"], config.levels, results["frontier"]
  )
  return results


# ----------------------------------------------------------------------------
# Entry point.


def train_and_evaluate(
  config: default.Config, workdir: str | pathlib.Path
) -> dict[str, Any]:
  """Pre-trains (or loads), fine-tunes, and writes the results.

  With ``config.sweep``, every optimizer of ``config.sweep_optimizers`` runs
  at each learning rate of ``config.sweep_lrs`` for ``config.epochs_for``
  epochs; each optimizer's learning rate with the best held-out CIFAR-100
  accuracy goes into the table. With ``config.frontier``, the families of
  :func:`frontier.plan` run with the same batch budget and the frontier table
  is written (``frontier.json``, ``frontier.md``, ``frontier.png``).
  Otherwise one run of ``config.optimizer`` at ``config.lr`` for
  ``config.epochs``.

  Args:
    config: the configuration.
    workdir: output folder: ``results.json``, ``table.md``, ``curves.png``
      (or the frontier's files), and the ``pretrain/`` and ``finetune/`` run
      folders with orbax checkpoints.

  Returns:
    ``{"config", "data_sizes", "pretrain", "runs", "wall_s", "device", ...}``
    with ``"selected"``, ``"table"`` and ``"runs_table"`` (sweep, one run) or
    ``"frontier"``, ``"table"`` and ``"study_table"`` (frontier).
  """
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
  if config.frontier:
    results.update(_frontier(config, workdir, data, pretrained))
  else:
    results.update(
      sweep.run(
        config,
        lambda name, lr, epochs: finetune(
          config, workdir, data, pretrained, optimizer=name, lr=lr, epochs=epochs
        ),
      )
    )
    results["table"] = reporting.format_table(results)
    results["runs_table"] = reporting.format_runs(results["runs"])
  results["wall_s"] = time.perf_counter() - t0
  results["cpu_s"] = time.process_time() - c0
  results["loadavg"] = {"start": load_start, "end": os.getloadavg()}
  reporting.write_results(config, workdir, results)
  return results
