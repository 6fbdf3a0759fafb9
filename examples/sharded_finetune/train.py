"""Pre-train on one domain, fine-tune on its neighbour, on a device mesh.

``train_and_evaluate(config, workdir)`` runs the whole experiment:

1. read the standard library's source and split it into the *old* and *new*
   domains (``input_pipeline``);
2. build a ``(data, model)`` mesh and shard a byte-level transformer LM on it
   (FSDP over ``data``, tensor parallelism over ``model``, see
   ``sharding.py``);
3. pre-train it on the old domain with AdamW;
4. fine-tune copies of it on the new domain with AdamW at several learning
   rates and with PROFIT (AdamW as its main optimizer) at several main
   learning rates, every run consuming the same batches;
5. evaluate both domains' validation loss along the way: the old domain
   measures retention (forgetting), the new one transfer.

Every run goes through one ``jax.jit`` train step with explicit
``in_shardings``/``out_shardings`` around ``optax_profit.make_train_step``
(one PROFIT cycle, ``cycle_length = n_ref + 1`` stacked batches, per call;
params and optimizer state donated), or, with ``train_step="per_call"``,
around one batch and one ``tx.update`` (:func:`make_sharded_update_step`).
With several processes (``jax.distributed``) each loads its rows of every
batch, writes and reads its own checkpoint shards, and only process 0 shows
progress and writes the results. Each run checkpoints its whole state
(params, optimizer state incl. PROFIT's, step, eval history) with orbax and
resumes from its latest checkpoint when started again with the same
configuration (``runs.py``). Outputs (``reporting.py``): ``results.json``,
``table.md`` and ``tradeoff.png`` in ``workdir``.
"""

import dataclasses
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

import optax_profit
from examples.sharded_finetune import (
  checkpointing,
  input_pipeline,
  models,
  reporting,
  runs,
  sharding,
)
from examples.sharded_finetune.configs import default

Config = default.Config
Params = Any
LossFn = Callable[[Params, jax.Array], jax.Array]

#: Data streams of ``input_pipeline.train_batches``.
PRETRAIN_STREAM = 0
FINETUNE_STREAM = 1
#: Exit code of every process stopped by ``stop_after_step`` (fault injection).
EXIT_STOPPED = 75


def make_model(config: Config) -> models.TransformerLM:
  """The transformer of ``config``."""
  return models.TransformerLM(
    vocab_size=input_pipeline.VOCAB_SIZE,
    d_model=config.d_model,
    num_layers=config.num_layers,
    num_heads=config.num_heads,
    d_ff=config.d_ff,
    max_len=config.seq_len,
  )


def make_loss_fn(model: models.TransformerLM, mesh: jax.sharding.Mesh) -> LossFn:
  """Mean next-byte cross-entropy (nats) of ``tokens`` ``[batch, seq+1]``.

  The model's activation constraints (``nn.with_logical_constraint``) are
  resolved against ``mesh`` and ``models.LOGICAL_AXIS_RULES`` at trace time.

  Args:
    model: the language model.
    mesh: the device mesh.

  Returns:
    ``loss_fn(params, tokens) -> scalar``.
  """

  def loss_fn(params: Params, tokens: jax.Array) -> jax.Array:
    with (
      jax.sharding.use_abstract_mesh(mesh.abstract_mesh),
      nn.logical_axis_rules(models.LOGICAL_AXIS_RULES),
    ):
      logits = model.apply({"params": params}, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  return loss_fn


params_layout = models.params_layout
init_params = models.init_params


def make_optimizer(
  method: str, lr: float, config: Config
) -> optax.GradientTransformation:
  """The optimizer of a run.

  Args:
    method: ``"pretrain"`` (AdamW, warm-up and cosine decay, clipping),
      ``"adamw"`` (constant ``lr``), ``"profit"`` (PROFIT around AdamW at
      constant ``lr``, reference SGD at ``lr / profit_ratio``) or
      ``"profit_sgd"`` (the same around SGD with momentum 0.9).
    lr: the (peak, main) learning rate.
    config: the configuration.

  Returns:
    The optax transformation.

  Raises:
    ValueError: on an unknown ``method``.
  """
  if method == "pretrain":
    schedule = optax.warmup_cosine_decay_schedule(
      0.0,
      lr,
      config.pretrain_warmup,
      max(config.pretrain_steps, config.pretrain_warmup + 1),
      end_value=lr / 10,
    )
    return optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.adamw(schedule, weight_decay=config.weight_decay),
    )
  adamw = optax.adamw(lr, weight_decay=config.weight_decay)
  if method == "adamw":
    return adamw
  if method == "profit":
    return optax_profit.profit(adamw, ref=lr / config.profit_ratio, n_ref=config.n_ref)
  if method == "profit_sgd":
    sgd = optax.sgd(lr, momentum=0.9)
    return optax_profit.profit(sgd, ref=lr / config.profit_ratio, n_ref=config.n_ref)
  raise ValueError(
    f"`method` must be one of {runs.METHODS} or 'pretrain', got {method!r}."
  )


def make_sharded_train_step(
  loss_fn: LossFn,
  tx: optax.GradientTransformation,
  mesh: jax.sharding.Mesh,
  param_shardings: Params,
  state_shardings: optax.OptState,
  cycle_length: int,
) -> Callable[..., Any]:
  """``optax_profit.make_train_step`` under ``jax.jit`` with shardings.

  Args:
    loss_fn: ``loss_fn(params, tokens)``.
    tx: the optimizer.
    mesh: the device mesh.
    param_shardings: the params' shardings.
    state_shardings: the optimizer state's shardings
      (``sharding.opt_state_shardings``).
    cycle_length: the batches one call consumes (``n_ref + 1``, one PROFIT
      cycle; AdamW runs take as many per call, so that every run evaluates
      and checkpoints at the same batch counts).

  Returns:
    ``step(params, opt_state, batches) -> (params, opt_state, metrics)`` with
    ``batches`` int32 ``[cycle_length, batch, seq + 1]``; params and
    state keep their shardings and are donated.
  """
  inner = optax_profit.make_train_step(
    loss_fn, tx, cycle_length=cycle_length, donate=False
  )
  return jax.jit(
    inner,
    in_shardings=(
      param_shardings,
      state_shardings,
      sharding.batch_sharding(mesh),
    ),
    out_shardings=(param_shardings, state_shardings, sharding.replicated(mesh)),
    donate_argnums=(0, 1),
  )


def make_sharded_update_step(
  loss_fn: LossFn,
  tx: optax.GradientTransformation,
  mesh: jax.sharding.Mesh,
  param_shardings: Params,
  state_shardings: optax.OptState,
) -> Callable[..., Any]:
  """One batch and one ``tx.update`` per call, under ``jax.jit`` with shardings.

  The per-call path (``config.train_step = "per_call"``): the usual optax
  loop, in which a PROFIT state can be checkpointed between a reference step
  and its main step.

  Args:
    loss_fn: ``loss_fn(params, tokens)``.
    tx: the optimizer.
    mesh: the device mesh.
    param_shardings: the params' shardings.
    state_shardings: the optimizer state's shardings.

  Returns:
    ``step(params, opt_state, batches) -> (params, opt_state, metrics)`` with
    ``batches`` int32 ``[1, batch, seq + 1]`` (the stacked layout of
    :func:`make_sharded_train_step`, one batch); ``metrics`` holds ``loss``
    ``[1]`` and, for PROFIT, the diagnostics its state holds after the call
    (those of the last main step).
  """

  def step(params, opt_state, batches):
    loss, grads = jax.value_and_grad(loss_fn)(params, batches[0])
    updates, opt_state = tx.update(grads, opt_state, params)
    metrics = {"loss": loss[None]}
    if isinstance(opt_state, optax_profit.ProfitState):
      metrics.update(
        {
          k: getattr(opt_state.diagnostics, k)
          for k in ("omega", "delta_norm", "projected")
        }
      )
    return optax.apply_updates(params, updates), opt_state, metrics

  return jax.jit(
    step,
    in_shardings=(
      param_shardings,
      state_shardings,
      sharding.batch_sharding(mesh),
    ),
    out_shardings=(param_shardings, state_shardings, sharding.replicated(mesh)),
    donate_argnums=(0, 1),
  )


def make_evaluate(
  loss_fn: LossFn,
  mesh: jax.sharding.Mesh,
  param_shardings: Params,
  batch_size: int,
) -> Callable[[Params, np.ndarray], float]:
  """``evaluate(params, windows) -> mean loss`` over fixed windows.

  Args:
    loss_fn: ``loss_fn(params, tokens)``.
    mesh: the device mesh.
    param_shardings: the params' shardings.
    batch_size: windows per compiled call (divides the number of windows).

  Returns:
    The evaluation function; ``windows`` is the global int32
    ``[n, seq + 1]`` array (each process passes its rows on).
  """
  batch = sharding.batch_sharding(mesh, stacked=False)
  step = jax.jit(
    loss_fn,
    in_shardings=(param_shardings, batch),
    out_shardings=sharding.replicated(mesh),
  )
  count, index = jax.process_count(), jax.process_index()
  local = batch_size // count

  def evaluate(params: Params, windows: np.ndarray) -> float:
    losses = []
    for start in range(0, len(windows), batch_size):
      rows = windows[start : start + batch_size][index * local : (index + 1) * local]
      losses.append(step(params, sharding.global_array(rows, batch)))
    return float(np.mean(jax.device_get(losses)))

  return evaluate


class Experiment:
  """The shared pieces of every run: data, mesh, model, compiled functions.

  Args:
    config: the configuration.
    workdir: where checkpoints and results go.
    mesh: the device mesh (default: :func:`sharding.make_mesh` with
      ``config.mesh_shape``).
    show_progress: show tqdm bars (on process 0).
  """

  def __init__(
    self,
    config: Config,
    workdir: str | pathlib.Path,
    mesh: jax.sharding.Mesh | None = None,
    show_progress: bool = True,
  ):
    self.config = config
    self.workdir = pathlib.Path(workdir)
    default.validate(config)
    self.mesh = mesh or sharding.make_mesh(config.mesh_shape)
    default.validate(config, self.mesh.shape["data"])
    self.domains = input_pipeline.load_domains(config.split_letter, config.val_mod)
    self.eval_sets = {
      name: input_pipeline.eval_windows(
        domain.val, num=config.eval_windows, seq_len=config.seq_len
      )
      for name, domain in self.domains.items()
    }
    self.model = make_model(config)
    self.loss_fn = make_loss_fn(self.model, self.mesh)
    self.param_shardings, self.abstract_params = params_layout(self.model, self.mesh)
    init = models.init_fn(self.model)
    self._init = jax.jit(
      lambda rng: nn.meta.unbox(init(rng)), out_shardings=self.param_shardings
    )
    self._evaluate = make_evaluate(
      self.loss_fn, self.mesh, self.param_shardings, config.batch_size
    )
    self._optimizers: dict[runs.RunSpec, tuple[Any, ...]] = {}
    self.show_progress = show_progress and jax.process_index() == 0
    self.cycle_length = config.n_ref + 1
    #: Batches per call of the train step: one cycle, or one batch (per call).
    self.batches_per_call = self.cycle_length if config.train_step == "cycle" else 1

  def init_params(self, seed: int) -> Params:
    """Freshly initialised params, on their shardings."""
    return self._init(jax.random.key(seed))

  def evaluate(self, params: Params) -> dict[str, float]:
    """Validation loss of both domains."""
    return {name: self._evaluate(params, w) for name, w in self.eval_sets.items()}

  def optimizer(self, spec: runs.RunSpec) -> tuple[Any, ...]:
    """``(tx, state_shardings, init_fn, step_fn)`` of a run, compiled once."""
    if spec not in self._optimizers:
      tx = make_optimizer(spec.method, spec.lr, self.config)
      state_shardings = sharding.opt_state_shardings(
        tx, self.abstract_params, self.param_shardings, self.mesh
      )
      init_fn = jax.jit(tx.init, out_shardings=state_shardings)
      if self.config.train_step == "cycle":
        step_fn = make_sharded_train_step(
          self.loss_fn,
          tx,
          self.mesh,
          self.param_shardings,
          state_shardings,
          self.cycle_length,
        )
      else:
        step_fn = make_sharded_update_step(
          self.loss_fn, tx, self.mesh, self.param_shardings, state_shardings
        )
      self._optimizers[spec] = (tx, state_shardings, init_fn, step_fn)
    return self._optimizers[spec]

  def _whole_calls(self, n: int) -> int:
    """``n`` batches rounded up to whole calls of ``batches_per_call`` batches."""
    k = self.batches_per_call
    return -(-n // k) * k

  def _batches(self, text: np.ndarray, stream: int, step: int) -> jax.Array:
    """The ``batches_per_call`` stacked batches from batch ``step`` on, sharded."""
    config = self.config
    local = input_pipeline.train_batches(
      text,
      seed=config.seed,
      stream=stream,
      step=step,
      num_batches=self.batches_per_call,
      batch_size=config.batch_size,
      seq_len=config.seq_len,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
    return sharding.global_array(local, sharding.batch_sharding(self.mesh))

  def _record(self, spec, num_batches, history, timing, diagnostics) -> dict[str, Any]:
    """A run's record: its settings, eval history, final losses and timings."""
    record = {
      "name": spec.name,
      "method": spec.method,
      "lr": spec.lr,
      "batches": num_batches,
      "optimizer_steps": (
        num_batches // self.cycle_length
        if spec.method.startswith("profit")
        else num_batches
      ),
      "final": {name: history[-1][name] for name in ("old", "new")},
      "history": history,
      **timing,
    }
    if spec.method.startswith("profit"):
      record["ref_lr"] = spec.lr / self.config.profit_ratio
      record["diagnostics"] = [
        dict(
          zip(("step", "omega", "delta_norm", "projected"), _diagnostic(d), strict=True)
        )
        for d in jax.device_get(diagnostics)
      ]
    return record

  def _start(self, mngr, spec, params, initial_eval):
    """A run's starting point: its latest checkpoint, or ``params`` afresh.

    Returns:
      ``(params, opt_state, step, history, records)``; ``records`` is None
      for a fresh run, else the checkpointed ``(projected since the last
      evaluation, diagnostics)`` of PROFIT's main steps, so that a resumed
      run reports what an uninterrupted one does.
    """
    tx, state_shardings, init_fn, _ = self.optimizer(spec)
    target = runs.restore_target(
      tx, self.abstract_params, self.param_shardings, state_shardings, self.mesh
    )
    resumed = runs.resume(mngr, target, discard=params)
    if resumed is None:
      history = [{"step": 0, **(initial_eval or self.evaluate(params))}]
      return params, init_fn(params), 0, history, None
    state, extra = resumed
    projected = list(extra.get("projected_since_eval", []))
    diagnostics = [tuple(d) for d in extra.get("diagnostics", [])]
    records = (projected, diagnostics)
    return state.params, state.opt_state, int(state.step), extra["history"], records

  def train(
    self,
    spec: runs.RunSpec,
    params: Params,
    *,
    num_batches: int,
    domain: str,
    stream: int,
    checkpoint_dir: pathlib.Path,
    initial_eval: dict[str, float] | None = None,
    stop_after_step: int | None = None,
  ) -> tuple[Params, dict[str, Any]]:
    """Trains ``params`` (donated) with ``spec``'s optimizer, resumably.

    If ``checkpoint_dir`` holds a checkpoint, the run continues from the
    latest one (``params`` are then discarded) instead of starting over.

    Args:
      spec: the run.
      params: the starting params, on ``self.param_shardings`` (their buffers
        are donated: pass a copy to keep them).
      num_batches: batches to train for (rounded up to whole calls).
      domain: ``"old"`` or ``"new"``, the training text.
      stream: the data stream id.
      checkpoint_dir: this run's checkpoint directory.
      initial_eval: the evaluation of ``params``, if known.
      stop_after_step: fault injection: right after the first checkpoint at
        this batch or later, every process exits abruptly with
        :data:`EXIT_STOPPED` (as if killed; nothing after it runs).

    Returns:
      ``(params, record)``; ``record`` holds the eval history, the final
      validation losses and the timings.
    """
    config, mesh = self.config, self.mesh
    k = self.batches_per_call
    num_batches = self._whole_calls(num_batches)
    eval_every = self._whole_calls(config.eval_every)
    checkpoint_every = self._whole_calls(config.checkpoint_every)
    step_fn = self.optimizer(spec)[3]
    text = self.domains[domain].train
    start_time = time.perf_counter()
    with checkpointing.manager(checkpoint_dir, max_to_keep=1) as mngr:
      params, opt_state, step, history, records = self._start(
        mngr, spec, params, initial_eval
      )
      resumed_from = step if records is not None else None
      projected, diagnostics = records or ([], [])
      bar = tqdm.tqdm(
        total=num_batches,
        initial=step,
        desc=f"{spec.name:<17}",
        disable=not self.show_progress,
        unit="batch",
        leave=True,
      )
      first_call_s = None  # Includes the compilation.
      while step < num_batches:
        batches = self._batches(text, stream, step)
        params, opt_state, metrics = step_fn(params, opt_state, batches)
        if first_call_s is None:
          jax.block_until_ready(metrics)
          first_call_s = time.perf_counter() - start_time
        step += k
        bar.update(k)
        if "projected" in metrics and step % self.cycle_length == 0:
          # After a main step (every call of the cycle path; every
          # cycle_length-th call of the per-call path).
          projected.append(metrics["projected"])
          diagnostics.append(
            (step, *(metrics[m] for m in ("omega", "delta_norm", "projected")))
          )
        if step % eval_every == 0 or step == num_batches:
          entry = {"step": step, "train": float(jnp.mean(metrics["loss"]))}
          if projected:
            entry["projected_fraction"] = float(np.mean(jax.device_get(projected)))
            projected = []
          # PROFIT's weights to evaluate: theta_ref if a call ends mid-cycle.
          profit = spec.method == "profit"
          weights = optax_profit.eval_params(params, opt_state) if profit else params
          history.append({**entry, **self.evaluate(weights)})
          bar.set_postfix({k: f"{history[-1][k]:.3f}" for k in ("train", "old", "new")})
        if step % checkpoint_every == 0 or step == num_batches:
          projected, diagnostics = jax.device_get((projected, diagnostics))
          state = (step, params, opt_state)
          _checkpoint(mngr, mesh, state, history, projected, diagnostics)
          if stop_after_step is not None and step >= stop_after_step:
            _stop_abruptly(step)
      bar.close()
    timing = {
      "resumed_from_step": resumed_from,
      "wall_s": time.perf_counter() - start_time,
      "first_call_s": first_call_s,
    }
    record = self._record(spec, num_batches, history, timing, diagnostics)
    return params, record


def _checkpoint(mngr, mesh, state, history, projected, diagnostics) -> None:
  """Saves ``(step, params, opt_state)`` with the history and PROFIT's records.

  Args:
    mngr: the run's checkpoint manager.
    mesh: the device mesh (the step is replicated on it).
    state: ``(step, params, opt_state)``.
    history: the evaluations so far.
    projected: per main step since the last evaluation, whether it projected.
    diagnostics: every main step's ``(step, omega, delta_norm, projected)``.
  """
  step, params, opt_state = state
  step_array = jax.device_put(jnp.int32(step), sharding.replicated(mesh))
  extra = {
    "history": history,
    "projected_since_eval": [bool(p) for p in projected],
    "diagnostics": [_diagnostic(d) for d in diagnostics],
  }
  checkpointing.save(
    mngr, checkpointing.TrainState(step_array, params, opt_state), extra=extra
  )


def _diagnostic(d: tuple[Any, ...]) -> list[Any]:
  """``(step, omega, delta_norm, projected)`` as JSON values."""
  step, omega, delta_norm, projected = d
  return [int(step), float(omega), float(delta_norm), bool(projected)]


def _stop_abruptly(step: int) -> None:
  """Ends every process right after a checkpoint, as a kill would."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"stop_after_step_{step}")
  if jax.process_index() == 0:
    print(
      f"\nstopped after the checkpoint at batch {step} (--stop-after-step)", flush=True
    )
  os._exit(EXIT_STOPPED)


def train_and_evaluate(
  config: Config,
  workdir: str | pathlib.Path,
  show_progress: bool = True,
  stop_after_step: int | None = None,
) -> dict[str, Any]:
  """Runs pre-training and every fine-tuning run; writes the results.

  Args:
    config: the configuration.
    workdir: output directory (``results.json``, ``table.md``,
      ``tradeoff.png``, ``checkpoints/``).
    show_progress: show tqdm bars (on process 0).
    stop_after_step: fault injection, see :meth:`Experiment.train`.

  Returns:
    The results dict written to ``results.json`` (by process 0 only).
  """
  workdir = pathlib.Path(workdir)
  exp = Experiment(config, workdir, show_progress=show_progress)
  started = time.perf_counter()
  params, pre_record = exp.train(
    runs.RunSpec("pretrain", config.pretrain_lr),
    exp.init_params(config.seed),
    num_batches=config.pretrain_steps,
    domain="old",
    stream=PRETRAIN_STREAM,
    checkpoint_dir=runs.pretrain_dir(workdir, config),
    stop_after_step=stop_after_step,
  )
  pretrained_eval = pre_record["final"]
  finetune = []
  for spec in runs.finetune_specs(config):
    _, record = exp.train(
      spec,
      jax.tree.map(lambda x: x.copy(), params),
      num_batches=config.ft_steps,
      domain="new",
      stream=FINETUNE_STREAM,
      checkpoint_dir=runs.finetune_dir(workdir, config, spec),
      initial_eval=pretrained_eval,
      stop_after_step=stop_after_step,
    )
    finetune.append(record)
  results = {
    "config": dataclasses.asdict(config),
    "environment": reporting.environment(exp.mesh),
    "data": reporting.data_summary(exp.domains),
    "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
    "pretrained": pretrained_eval,
    "pretrain": pre_record,
    "finetune": finetune,
    "wall_s": time.perf_counter() - started,
  }
  if jax.process_index() == 0:
    reporting.write(results, workdir)
  return results
