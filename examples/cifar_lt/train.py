"""GOODFIT Sec. 4.2 on CIFAR-100-LT: stage 1, stage 2 and the sweep (README.md)."""

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
from examples.cifar_lt import frontier, input_pipeline, methods
from examples.cifar_lt.configs import default
from examples.common import baselines, compile_cache, runs

Params = Any
NOT_IN_STEP = default.NOT_IN_STEP
#: The stage 2 methods whose final weights get a WiSE-FT curve.
WISE_METHODS = ("full", "full_profit")
_KEYS = ("base_accuracy", "lt_accuracy", "accuracy")


def _backbone(config: default.Config) -> nn.Module:
  """The backbone (``examples/cifar/models.py``; the small CNN's flat layout)."""
  return models.create_backbone(config.model, cnn_width=config.cnn_width, cnn_flat=True)


def _features(backbone: nn.Module, params: Params, images: jax.Array) -> jax.Array:
  """Backbone features of uint8 ``images``, normalized by CIFAR-100's statistics."""
  images = models.normalize_images(images, models.CIFAR100_MEAN, models.CIFAR100_STD)
  return backbone.apply({"params": params}, images)


def _head(params: Params, features: jax.Array) -> jax.Array:
  return models.Head(input_pipeline.NUM_CLASSES).apply({"params": params}, features)


def init_params(config: default.Config, key: jax.Array) -> Params:
  """Fresh ``{"backbone", "head"}`` params (a 100-way head)."""
  backbone, head = _backbone(config), models.Head(input_pipeline.NUM_CLASSES)
  images = jnp.zeros((1, 32, 32, 3), jnp.float32)
  key_backbone, key_head = jax.random.split(key)
  backbone_params = jax.jit(backbone.init)(key_backbone, images)["params"]
  features = backbone.apply({"params": backbone_params}, images)
  return {"backbone": backbone_params, "head": head.init(key_head, features)["params"]}


def make_loss_fn(config: default.Config):
  """``loss_fn(params, batch) -> (mean cross-entropy, {"accuracy"})``."""
  backbone = _backbone(config)

  def loss_fn(params: Params, batch: dict[str, jax.Array]):
    features = _features(backbone, params["backbone"], batch["image"])
    logits, labels = _head(params["head"], features), batch["label"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

  return loss_fn


class Evaluator:
  """Test accuracy; head-only runs reuse the pre-trained backbone's features."""

  def __init__(self, config: default.Config, data: input_pipeline.Data):
    backbone = _backbone(config)
    self._test = data.test
    self._is_base = data.test.labels < data.num_base
    self._batch = min(config.eval_batch_size, len(data.test.labels))
    self._features = jax.jit(lambda p, images: _features(backbone, p, images))
    self._predict = jax.jit(lambda p, f: jnp.argmax(_head(p, f), -1))

  def features(self, backbone_params: Params) -> np.ndarray:
    """Backbone features of every test image, ``[n, features]``."""
    batches = input_pipeline.eval_dataset(self._test, self._batch)
    parts = [np.asarray(self._features(backbone_params, b["image"])) for b in batches]
    return np.concatenate(parts)[: len(self._test.labels)]

  def evaluate(self, params: Params, features: np.ndarray | None = None):
    """``{"base_accuracy", "lt_accuracy", "accuracy"}`` of ``params``."""
    if features is None:
      features = self.features(params["backbone"])
    correct = np.asarray(self._predict(params["head"], features)) == self._test.labels
    masks = (self._is_base, ~self._is_base, slice(None))  # in the order of _KEYS
    return {k: float(np.mean(correct[m])) for k, m in zip(_KEYS, masks, strict=True)}


def _bar(config: default.Config, items, desc: str, **kwargs) -> tqdm.tqdm:
  return tqdm.tqdm(items, desc=desc, disable=not config.progress, **kwargs)


def pretrain(config, workdir, data, evaluator) -> dict[str, Any]:
  """Stage 1 on the base classes in ``<workdir>/stage1/<name>``, resumed or loaded.

  Returns ``{"params", "name", "history", "wall_s", **evaluator.evaluate}``.
  """
  settings = {  # every setting the result depends on: its folder's digest
    "model": config.model,
    "cnn_width": config.cnn_width if config.model == "cnn" else None,
    "counts": data.counts.tolist(),
    "lt_seed": config.lt_seed,
    "held_out": config.held_out_classes,
    "augment": config.augment,
    "optimizer": config.pretrain_optimizer,
    "lr": config.pretrain_lr,
    "weight_decay": config.pretrain_weight_decay,
    "epochs": config.pretrain_epochs,
    "batch_size": config.pretrain_batch_size,
    "seed": config.pretrain_seed,
  }
  name = runs.run_name(f"{config.model}-beta{data.beta:g}", settings)
  epochs = config.pretrain_epochs
  if config.pretrain_optimizer == "adam":
    tx = optax.adam(config.pretrain_lr)
  else:
    steps = epochs * (len(data.base_train.labels) // config.pretrain_batch_size)
    schedule = optax.cosine_decay_schedule(config.pretrain_lr, max(steps, 1))
    decay = optax.add_decayed_weights(config.pretrain_weight_decay)
    tx = optax.chain(decay, optax.sgd(schedule, momentum=0.9))
  params = init_params(config, jax.random.key(config.pretrain_seed))
  state = {"params": params, "opt_state": tx.init(params)}
  checkpoints = runs.Checkpoints(workdir / "stage1" / name)
  start, history = 0, []
  if (restored := checkpoints.restore(state)) is not None:
    start, state, history = restored
    done = "loaded" if start >= epochs else f"resuming after epoch {start}"
    tqdm.tqdm.write(f"stage 1 {name}: {done}.")
  wall = history[-1]["wall_s"] if history else 0.0
  step = optax_profit.make_train_step(
    make_loss_fn(config), tx, has_aux=True, cycle_length=1
  )
  params, opt_state = state["params"], state["opt_state"]
  desc = f"stage 1 beta={data.beta:g}"
  bar = _bar(config, range(start, epochs), desc, leave=False, unit="epoch")
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
    if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == epochs:
      checkpoints.save(epoch + 1, {"params": params, "opt_state": opt_state}, history)
  checkpoints.close()
  point = evaluator.evaluate(params)
  if start < epochs:
    tqdm.tqdm.write(
      f"stage 1 beta={data.beta:g}: {epochs} epochs in {wall:.0f} s, "
      f"base-class test accuracy {point['base_accuracy']:.4f}"
    )
  return {"params": params, "name": name, "history": history, "wall_s": wall, **point}


def _optimizer(config: default.Config, method: str, lr=1.0, alpha=1.0, ratio=10.0):
  """``methods.create_optimizer`` with the config's main optimizer and ``n_ref``."""
  return methods.create_optimizer(
    method,
    lr,
    main_optimizer=config.main_optimizer,
    momentum=config.momentum,
    n_ref=config.n_ref,
    ratio=ratio,
    alpha=alpha,
  )


@compile_cache.cached(NOT_IN_STEP)
def _train_step(key: default.Config, method: str):
  """The compiled stage 2 step of ``method`` (any lr, alpha), built once."""
  tx = _optimizer(key, method)
  return optax_profit.make_train_step(
    make_loss_fn(key), tx, has_aux=True, cycle_length=key.cycle_length
  )


def finetune_name(config, stage1: str, method: str, lr: float, alpha: float, seed: int):
  """Folder name of a stage 2 run: readable prefix + digest of its settings."""
  _, profit, l2sp = methods.METHODS[method]
  settings = {
    "stage1": stage1,
    "method": method,
    "lr": lr,
    "alpha": alpha if l2sp else None,
    "seed": seed,
    "main_optimizer": config.main_optimizer,
    "momentum": config.momentum if config.main_optimizer == "sgd" else None,
    "batch_size": config.batch_size,
    "budget_batches": config.budget_batches,
    "eval_points": list(config.eval_points),
    "cycle_length": config.cycle_length,
    "ratio": config.ratio if profit else None,
    "augment": config.augment,
    "wise_points": config.wise_points if method in WISE_METHODS else None,
  }
  prefix = f"{method}_lr{lr:g}" + (f"_a{alpha:g}" if l2sp else "") + f"_s{seed}"
  return runs.run_name(prefix, settings)


def wise_curve(config, evaluator, pretrained, tuned, last) -> list[dict[str, Any]]:
  """WiSE-FT: ``(1 - a) * pretrained + a * tuned`` at ``wise_points`` values of
  ``a`` in [0, 1]; the ends are the pre-trained and the ``last`` evaluation."""
  wise = []
  for a in np.linspace(0.0, 1.0, config.wise_points):
    if a in (0.0, 1.0):
      point = pretrained if a == 0.0 else last
    else:
      mixed = baselines.interpolate(pretrained["params"], tuned, float(a))
      point = evaluator.evaluate(mixed)
    wise.append({"a": float(a), **{k: point[k] for k in _KEYS}})
  return wise


def finetune(
  config, workdir, data, pretrained, evaluator, method, lr, alpha, seed, features
) -> dict[str, Any]:
  """Stage 2: one run on the held-out classes, cached in ``stage2/<name>``.

  Every run makes ``budget_batches // (n_ref + 1)`` calls of a step over
  ``n_ref + 1`` stacked batches, so all see the same batches; head-only runs are
  evaluated on the pre-trained backbone's test ``features``.
  """
  name = finetune_name(config, pretrained["name"], method, lr, alpha, seed)
  path = workdir / "stage2" / name / "result.json"
  if (cached := runs.load_result(path)) is not None:
    return cached
  t0 = time.perf_counter()
  full, profit, _ = methods.METHODS[method]
  tx = _optimizer(config, method, lr, alpha, config.ratio)
  group, step = config.cycle_length, _train_step(config, method)
  params = jax.tree.map(jnp.copy, pretrained["params"])  # The step donates it.
  opt_state = tx.init(params)
  stream = input_pipeline.stacked(
    input_pipeline.batch_stream(
      data.held_out_train, config.batch_size, seed=seed, augment=config.augment
    ),
    group,
  )
  # PROFIT's weights to evaluate: theta_ref if the call ended mid-cycle.
  view = lambda p, s: optax_profit.eval_params(p, s) if profit else p
  curve = [{"batches_seen": 0, **{k: pretrained[k] for k in _KEYS}}]
  losses, diagnostics = [], {"projected": [], "removed_fraction": [], "cosine": []}
  calls, last = config.budget_batches // group, 0
  bar = _bar(config, range(calls), name.split("-")[0], leave=False)
  for call in bar:
    params, opt_state, metrics = step(params, opt_state, next(stream))
    losses.append(metrics["loss"])
    for key in diagnostics.keys() & metrics.keys():
      diagnostics[key].append(metrics[key])
    seen = (call + 1) * group
    if seen in config.eval_points:
      point = evaluator.evaluate(view(params, opt_state), None if full else features)
      loss = float(np.mean(jax.device_get(losses[last // group :])))
      curve.append({"batches_seen": seen, **point, "train_loss": loss})
      last = seen
      bar.set_postfix(
        base=f"{point['base_accuracy']:.3f}", lt=f"{point['lt_accuracy']:.3f}"
      )
  wise = None
  if method in WISE_METHODS and config.wise_points:
    wise = wise_curve(config, evaluator, pretrained, view(params, opt_state), curve[-1])
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
  runs.write_json(path, result)
  return result


def train_and_evaluate(config: default.Config, workdir: str | pathlib.Path) -> dict:
  """Stage 1 and the stage 2 sweep of every beta; writes and returns the results."""
  default.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0, c0, load_start = time.perf_counter(), time.process_time(), os.getloadavg()
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
    # The stage 2 runs of one seed: (method, lr, alpha).
    plan = [(m, lr, 0.0) for m in ("head", "head_profit") for lr in config.head_lrs]
    plan += [(m, lr, 0.0) for m in ("full", "full_profit") for lr in config.full_lrs]
    plan += [("l2sp", lr, a) for lr in config.l2sp_lrs for a in config.l2sp_alphas]
    items = [(seed, *item) for seed in config.seeds for item in plan]
    results = [
      finetune(config, workdir, data, pretrained, evaluator, m, lr, a, s, features)
      for s, m, lr, a in _bar(config, items, f"stage 2 beta={beta:g}")
    ]
    entry = per_beta[f"{beta:g}"] = {
      "beta": beta,
      "counts": data.counts.tolist(),
      "sizes": data.sizes(),
      "stage1": {k: v for k, v in pretrained.items() if k != "params"},
      "runs": results,
      "table": frontier.summarize(config, results, pretrained["base_accuracy"]),
    }
    frontier.plot_tradeoff(config, entry, workdir / f"tradeoff_beta{beta:g}.png")
  out = {
    "config": dataclasses.asdict(config),
    "device": str(jax.devices()[0].device_kind),
    "betas": per_beta,
    "table": "\n\n".join(frontier.format_table(config, e) for e in per_beta.values()),
    "wall_s": time.perf_counter() - t0,
    "cpu_s": time.process_time() - c0,
    "loadavg": {"start": load_start, "end": os.getloadavg()},
  }
  runs.write_json(workdir / "results.json", out)
  (workdir / "table.md").write_text(out["table"] + "\n")
  return out
