"""Stage 1 on the base classes, stage 2 on the held-out classes, the sweep.

GOODFIT's held-out-class experiment (GOODFIT Sec. 4.2, Table 2, Fig. 3) on
CIFAR-100-LT: for each imbalance ratio ``beta``, stage 1 trains backbone + a
100-way head on the long-tailed images of classes 0-89 (classes 90-99 held
out), checkpointed with orbax and reused; stage 2 fine-tunes it **only** on the
long-tailed images of classes 90-99 with each method of ``methods.py``, every
run for the same number of batches seen, evaluated after ``eval_points``
batches on the balanced test set: base-class accuracy (test images of classes
0-89) and held-out ("LT") accuracy (classes 90-99), both 100-way. WiSE-FT
interpolates each full-model run's final weights with the pre-trained ones.
``frontier.py`` reads the families' curves into the table.
"""

import dataclasses
import os
import pathlib
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

import optax_profit
from examples.cifar import models
from examples.cifar_lt import frontier, input_pipeline, methods, reporting, runs
from examples.cifar_lt.configs import default
from examples.common import baselines, compile_cache
from examples.common import runs as common_runs

Params = Any
NUM_CLASSES = input_pipeline.NUM_CLASSES

WISE_METHODS = runs.WISE_METHODS


# ----------------------------------------------------------------------------
# Model functions.


def _backbone(config: default.Config) -> nn.Module:
  """The backbone (``examples/cifar/models.py``; the small CNN's flat layout)."""
  return models.create_backbone(config.model, cnn_width=config.cnn_width, cnn_flat=True)


def _normalize(images: jax.Array) -> jax.Array:
  """Images normalized with the CIFAR-100 statistics."""
  return models.normalize_images(images, models.CIFAR100_MEAN, models.CIFAR100_STD)


def init_params(config: default.Config, key: jax.Array) -> Params:
  """Fresh ``{"backbone", "head"}`` params (a 100-way head).

  Args:
    config: supplies the model.
    key: the PRNG key.

  Returns:
    The params.
  """
  backbone = _backbone(config)
  images = jnp.zeros((1, 32, 32, 3), jnp.float32)
  key_backbone, key_head = jax.random.split(key)
  backbone_params = jax.jit(backbone.init)(key_backbone, images)["params"]
  features = backbone.apply({"params": backbone_params}, images)
  head_params = models.Head(NUM_CLASSES).init(key_head, features)["params"]
  return {"backbone": backbone_params, "head": head_params}


def logits_fn(backbone: nn.Module, params: Params, images: jax.Array) -> jax.Array:
  """100-way logits of uint8 ``images`` under ``{"backbone", "head"}``."""
  features = backbone.apply({"params": params["backbone"]}, _normalize(images))
  return models.Head(NUM_CLASSES).apply({"params": params["head"]}, features)


def make_loss_fn(config: default.Config):
  """``loss_fn(params, batch) -> (mean cross-entropy, {"accuracy"})``."""
  backbone = _backbone(config)

  def loss_fn(params: Params, batch: dict[str, jax.Array]):
    logits = logits_fn(backbone, params, batch["image"])
    labels = batch["label"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

  return loss_fn


class Evaluator:
  """Base-class and held-out-class test accuracy of a model.

  Head-only runs keep the pre-trained backbone, so their evaluations reuse
  its test features (:meth:`features`) instead of recomputing them.

  Args:
    config: supplies the model and ``eval_batch_size``.
    data: supplies the test split and ``num_base``.
  """

  def __init__(self, config: default.Config, data: input_pipeline.Data):
    backbone = _backbone(config)
    self._test = data.test
    self._is_base = data.test.labels < data.num_base
    self._batch = min(config.eval_batch_size, len(data.test.labels))
    self._features = jax.jit(
      lambda p, images: backbone.apply({"params": p}, _normalize(images))
    )
    self._predict = jax.jit(
      lambda p, f: jnp.argmax(models.Head(NUM_CLASSES).apply({"params": p}, f), -1)
    )

  def features(self, backbone_params: Params) -> np.ndarray:
    """Backbone features of every test image, ``[n, features]``."""
    n = len(self._test.labels)
    parts = [
      np.asarray(self._features(backbone_params, b["image"]))
      for b in input_pipeline.eval_dataset(self._test, self._batch)
    ]
    return np.concatenate(parts)[:n]

  def evaluate(
    self, params: Params, features: np.ndarray | None = None
  ) -> dict[str, float]:
    """Accuracies of ``params`` (or of its head on given test ``features``).

    Args:
      params: ``{"backbone", "head"}``.
      features: the test features of ``params["backbone"]``, if known.

    Returns:
      ``{"base_accuracy", "lt_accuracy", "accuracy"}``.
    """
    if features is None:
      features = self.features(params["backbone"])
    correct = np.asarray(self._predict(params["head"], features)) == self._test.labels
    return {
      "base_accuracy": float(np.mean(correct[self._is_base])),
      "lt_accuracy": float(np.mean(correct[~self._is_base])),
      "accuracy": float(np.mean(correct)),
    }


def _log(text: str) -> None:
  tqdm.tqdm.write(text)


def _copy(tree: Params) -> Params:
  return jax.tree.map(jnp.copy, tree)


# ----------------------------------------------------------------------------
# Stage 1.


def _stage1_optimizer(
  config: default.Config, steps: int
) -> optax.GradientTransformation:
  if config.pretrain_optimizer == "adam":
    return optax.adam(config.pretrain_lr)
  schedule = optax.cosine_decay_schedule(config.pretrain_lr, max(steps, 1))
  return optax.chain(
    optax.add_decayed_weights(config.pretrain_weight_decay),
    optax.sgd(schedule, momentum=0.9),
  )


def pretrain(
  config: default.Config,
  workdir: pathlib.Path,
  data: input_pipeline.Data,
  evaluator: Evaluator,
) -> dict[str, Any]:
  """Stage 1: trains on the base classes, or loads the checkpoint.

  Args:
    config: supplies the stage 1 settings.
    workdir: the output folder; the run lives in
      ``<workdir>/stage1/<stage1_name>`` and resumes from its latest checkpoint.
    data: the splits.
    evaluator: the test evaluator.

  Returns:
    ``{"params", "name", "history", "base_accuracy", "lt_accuracy",
    "wall_s"}``.
  """
  name = runs.stage1_name(config, data)
  directory = workdir / "stage1" / name
  batches_per_epoch = len(data.base_train.labels) // config.pretrain_batch_size
  tx = _stage1_optimizer(config, config.pretrain_epochs * batches_per_epoch)
  params = init_params(config, jax.random.key(config.pretrain_seed))
  state = {"params": params, "opt_state": tx.init(params)}
  checkpoints = common_runs.Checkpoints(directory)
  restored = checkpoints.restore(state)
  history: list[dict[str, Any]] = []
  start = 0
  if restored is not None:
    start, state, history = restored
    _log(
      f"stage 1 {name}: {'loaded' if start >= config.pretrain_epochs else 'resuming after epoch ' + str(start)}."
    )
  wall = history[-1]["wall_s"] if history else 0.0
  step = optax_profit.make_train_step(
    make_loss_fn(config), tx, has_aux=True, cycle_length=1
  )
  params, opt_state = state["params"], state["opt_state"]
  bar = tqdm.tqdm(
    range(start, config.pretrain_epochs),
    desc=f"stage 1 beta={data.beta:g}",
    disable=not config.progress,
    leave=False,
    unit="epoch",
  )
  for epoch in bar:
    t0 = time.perf_counter()
    ds = input_pipeline.train_dataset(
      data.base_train,
      config.pretrain_batch_size,
      seed=config.pretrain_seed,
      epoch=epoch,
      augment=config.augment,
    )
    losses = []
    for i in range(len(ds)):
      batch = jax.tree.map(lambda x: x[None], ds[i])
      params, opt_state, metrics = step(params, opt_state, batch)
      losses.append(metrics["loss"])
    loss = float(np.mean(jax.device_get(losses)))
    wall += time.perf_counter() - t0
    history.append({"epoch": epoch + 1, "train_loss": loss, "wall_s": wall})
    bar.set_postfix(loss=f"{loss:.3f}")
    if (
      epoch + 1
    ) % config.checkpoint_every == 0 or epoch + 1 == config.pretrain_epochs:
      checkpoints.save(epoch + 1, {"params": params, "opt_state": opt_state}, history)
  checkpoints.close()
  point = evaluator.evaluate(params)
  if start < config.pretrain_epochs:
    _log(
      f"stage 1 beta={data.beta:g}: {config.pretrain_epochs} epochs in {wall:.0f} s, "
      f"base-class test accuracy {point['base_accuracy']:.4f}"
    )
  return {"params": params, "name": name, "history": history, "wall_s": wall, **point}


# ----------------------------------------------------------------------------
# Stage 2.

NOT_IN_STEP = default.NOT_IN_STEP


@compile_cache.cached(NOT_IN_STEP)
def _train_step(key: default.Config, method: str):
  """The compiled stage 2 step of ``method`` (any lr, alpha), built once."""
  tx = methods.create_optimizer(
    method,
    1.0,
    main_optimizer=key.main_optimizer,
    momentum=key.momentum,
    n_ref=key.n_ref,
    alpha=1.0,
  )
  return optax_profit.make_train_step(
    make_loss_fn(key), tx, has_aux=True, cycle_length=key.cycle_length
  )


_KEYS = ("base_accuracy", "lt_accuracy", "accuracy")


def wise_curve(
  config: default.Config,
  evaluator: Evaluator,
  pretrained: dict[str, Any],
  tuned: Params,
  last: dict[str, Any],
) -> list[dict[str, Any]]:
  """WiSE-FT: the evaluations of ``(1 - a) * pretrained + a * tuned``.

  Args:
    config: supplies ``wise_points`` (evenly spaced ``a`` in [0, 1]).
    evaluator: the test evaluator.
    pretrained: the stage 1 result (its params and accuracies: ``a = 0``).
    tuned: the fine-tuned params.
    last: the run's last evaluation (``a = 1``).

  Returns:
    ``{"a", "base_accuracy", "lt_accuracy", "accuracy"}`` per ``a``.
  """
  wise = []
  for a in np.linspace(0.0, 1.0, config.wise_points):
    if a == 0.0:
      point = {k: pretrained[k] for k in _KEYS}
    elif a == 1.0:
      point = {k: last[k] for k in _KEYS}
    else:
      point = evaluator.evaluate(
        baselines.interpolate(pretrained["params"], tuned, float(a))
      )
    wise.append({"a": float(a), **point})
  return wise


def _optimizer(config: default.Config, method: str, lr: float, alpha: float):
  """The stage 2 optimizer of ``method`` (``methods.create_optimizer``)."""
  return methods.create_optimizer(
    method,
    lr,
    main_optimizer=config.main_optimizer,
    momentum=config.momentum,
    n_ref=config.n_ref,
    ratio=config.ratio,
    alpha=alpha,
  )


def _train(config, step, state, stream, evaluate, curve, desc):
  """Stage 2's train-step calls, evaluated at ``eval_points`` into ``curve``.

  Args:
    config: supplies ``budget_batches``, ``cycle_length``, ``eval_points``.
    step: the compiled train step.
    state: ``(params, opt_state)``.
    stream: the stacked batches.
    evaluate: ``(params, opt_state) -> point`` (PROFIT's weights to evaluate:
      theta_ref if the call ended mid-cycle).
    curve: the points so far; the new ones are appended.
    desc: the progress bar's label.

  Returns:
    ``(params, opt_state, {diagnostic: values per call})``.
  """
  params, opt_state = state
  group = config.cycle_length
  losses, diagnostics = [], {"projected": [], "removed_fraction": [], "cosine": []}
  eval_points = set(config.eval_points)
  last = 0
  bar = tqdm.tqdm(
    range(config.budget_batches // group),
    desc=desc,
    disable=not config.progress,
    leave=False,
  )
  for call in bar:
    params, opt_state, metrics = step(params, opt_state, next(stream))
    losses.append(metrics["loss"])
    for key, values in diagnostics.items():
      if key in metrics:
        values.append(metrics[key])
    seen = (call + 1) * group
    if seen in eval_points:
      point = evaluate(params, opt_state)
      loss = float(np.mean(jax.device_get(losses[last // group :])))
      last = seen
      curve.append({"batches_seen": seen, **point, "train_loss": loss})
      bar.set_postfix(
        base=f"{point['base_accuracy']:.3f}", lt=f"{point['lt_accuracy']:.3f}"
      )
  return params, opt_state, diagnostics


def finetune(
  config: default.Config,
  workdir: pathlib.Path,
  data: input_pipeline.Data,
  pretrained: dict[str, Any],
  evaluator: Evaluator,
  *,
  method: str,
  lr: float,
  alpha: float = 0.0,
  seed: int = 0,
  pretrained_features: np.ndarray | None = None,
) -> dict[str, Any]:
  """Stage 2: one run of ``method`` on the held-out classes, and its curve.

  Every method makes ``config.budget_batches // cycle_length`` calls of an
  ``optax_profit.make_train_step`` step over ``cycle_length = n_ref + 1``
  stacked batches, so every run sees the same batches in the same order; a
  plain run makes ``budget_batches`` optimizer steps, a PROFIT run
  ``budget_batches / (n_ref + 1)`` main steps.

  Args:
    config: the configuration.
    workdir: the output folder; the run's ``result.json`` goes to
      ``<workdir>/stage2/<finetune_name>`` and is loaded instead of running
      again.
    data: the splits.
    pretrained: the stage 1 result (:func:`pretrain`).
    evaluator: the test evaluator.
    method: one of ``methods.METHODS``.
    lr: the main learning rate.
    alpha: L2-SP's strength.
    seed: seed of the batch order and augmentation.
    pretrained_features: the pre-trained backbone's test features (used by
      head-only runs).

  Returns:
    The run's settings, ``curve`` (points at batch 0 and ``eval_points``:
    ``batches_seen``, ``base_accuracy``, ``lt_accuracy``, ``train_loss``),
    ``wise`` (WiSE-FT points, full-model methods), ``main_steps``,
    ``diagnostics`` (PROFIT's, averaged over its main steps) and ``wall_s``.
  """
  name = runs.finetune_name(config, pretrained["name"], method, lr, alpha, seed)
  path = workdir / "stage2" / name / "result.json"
  cached = common_runs.load_result(path)
  if cached is not None:
    return cached
  t0 = time.perf_counter()
  full, profit, _ = methods.METHODS[method]
  tx = _optimizer(config, method, lr, alpha)
  group = config.cycle_length
  step = _train_step(config, method)
  params = _copy(pretrained["params"])  # The step donates its params.
  opt_state = tx.init(params)
  stream = input_pipeline.stacked(
    input_pipeline.batch_stream(
      data.held_out_train, config.batch_size, seed=seed, augment=config.augment
    ),
    group,
  )
  curve = [{"batches_seen": 0, **{k: pretrained[k] for k in _KEYS}}]
  calls = config.budget_batches // group
  params, opt_state, diagnostics = _train(
    config,
    step,
    (params, opt_state),
    stream,
    lambda p, s: evaluator.evaluate(
      optax_profit.eval_params(p, s) if profit else p,
      None if full else pretrained_features,
    ),
    curve,
    name.split("-")[0],
  )
  wise = None
  if method in WISE_METHODS and config.wise_points:
    tuned = optax_profit.eval_params(params, opt_state) if profit else params
    wise = wise_curve(config, evaluator, pretrained, tuned, curve[-1])
  result = {
    "name": name,
    "method": method,
    "lr": lr,
    "alpha": alpha if method == "l2sp" else None,
    "seed": seed,
    "ratio": config.ratio if profit else None,
    "ref_lr": lr / config.ratio if profit else None,
    "batches_seen": calls * group,
    "main_steps": calls if profit else calls * group,
    "curve": curve,
    "wise": wise,
    "diagnostics": {
      k: float(np.mean(jax.device_get(v))) for k, v in diagnostics.items() if v
    },
    "wall_s": time.perf_counter() - t0,
  }
  common_runs.write_json(path, result)
  return result


# ----------------------------------------------------------------------------
# The sweep.


def plan(config: default.Config) -> list[tuple[str, float, float]]:
  """The stage 2 runs of one seed: ``(method, lr, alpha)``."""
  items = [(m, lr, 0.0) for m in ("head", "head_profit") for lr in config.head_lrs]
  items += [(m, lr, 0.0) for m in ("full", "full_profit") for lr in config.full_lrs]
  items += [("l2sp", lr, a) for lr in config.l2sp_lrs for a in config.l2sp_alphas]
  return items


def train_and_evaluate(
  config: default.Config, workdir: str | pathlib.Path
) -> dict[str, Any]:
  """Runs stage 1 and the stage 2 sweep for every beta; writes the results.

  Args:
    config: the configuration.
    workdir: output folder: ``results.json``, ``table.md``,
      ``tradeoff_beta<b>.png`` (GOODFIT Fig. 3a's form), and the cached
      ``stage1/`` (orbax) and ``stage2/`` (JSON) runs.

  Returns:
    ``{"config", "betas": {beta: {"counts", "sizes", "stage1", "runs",
    "table"}}, "table", "wall_s", ...}``.
  """
  default.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0, c0 = time.perf_counter(), time.process_time()
  load_start = os.getloadavg()
  per_beta = {}
  for beta in config.betas:
    data = input_pipeline.load_data(config, beta)
    if len(data.held_out_train.labels) < config.batch_size:
      raise ValueError(
        f"`batch_size` = {config.batch_size} exceeds the "
        f"{len(data.held_out_train.labels)} held-out training images at beta={beta:g}."
      )
    evaluator = Evaluator(config, data)
    pretrained = pretrain(config, workdir, data, evaluator)
    features = evaluator.features(pretrained["params"]["backbone"])
    items = [(seed, *item) for seed in config.seeds for item in plan(config)]
    results = []
    bar = tqdm.tqdm(items, desc=f"stage 2 beta={beta:g}", disable=not config.progress)
    for seed, method, lr, alpha in bar:
      results.append(
        finetune(
          config,
          workdir,
          data,
          pretrained,
          evaluator,
          method=method,
          lr=lr,
          alpha=alpha,
          seed=seed,
          pretrained_features=features,
        )
      )
    summary = frontier.summarize(config, results, pretrained["base_accuracy"])
    per_beta[f"{beta:g}"] = {
      "beta": beta,
      "counts": data.counts.tolist(),
      "sizes": data.sizes(),
      "stage1": {k: v for k, v in pretrained.items() if k != "params"},
      "runs": results,
      "table": summary,
    }
    reporting.plot_tradeoff(
      config, per_beta[f"{beta:g}"], workdir / f"tradeoff_beta{beta:g}.png"
    )
  out = {
    "config": dataclasses.asdict(config),
    "device": str(jax.devices()[0].device_kind),
    "betas": per_beta,
  }
  out["table"] = reporting.format_tables(config, per_beta)
  out["wall_s"] = time.perf_counter() - t0
  out["cpu_s"] = time.process_time() - c0
  out["loadavg"] = {"start": load_start, "end": os.getloadavg()}
  common_runs.write_json(workdir / "results.json", out)
  (workdir / "table.md").write_text(out["table"] + "\n")
  return out
