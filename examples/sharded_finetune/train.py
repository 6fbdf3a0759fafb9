"""Pre-train on one domain, fine-tune on its neighbour, on a device mesh.

``train_and_evaluate(config, workdir)`` pre-trains the LM on the old domain,
fine-tunes copies of it on the new one with AdamW and PROFIT at several
learning rates (every run on the same batches) and evaluates both domains
along the way (retention and transfer). Every run is one jitted step with
explicit shardings and resumes from its orbax checkpoints. See the README.
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
from examples.sharded_finetune import checkpointing, input_pipeline, models, reporting
from examples.sharded_finetune.configs import default
from examples.sharded_finetune.main import EXIT_STOPPED

Config = default.Config
Params = Any
LossFn = Callable[[Params, jax.Array], jax.Array]

#: Data streams of ``input_pipeline.train_batches``.
PRETRAIN_STREAM, FINETUNE_STREAM = 0, 1
#: PROFIT's diagnostics, recorded after every main step.
DIAGNOSTICS = ("omega", "delta_norm", "projected")


def make_loss_fn(model: models.TransformerLM, mesh: jax.sharding.Mesh) -> LossFn:
  """Mean next-byte cross-entropy (nats) of ``tokens`` ``[batch, seq + 1]``."""

  def loss_fn(params: Params, tokens: jax.Array) -> jax.Array:
    with (
      jax.sharding.use_abstract_mesh(mesh.abstract_mesh),
      nn.logical_axis_rules(models.LOGICAL_AXIS_RULES),
    ):
      logits = model.apply({"params": params}, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  return loss_fn


def make_optimizer(
  method: str, lr: float, config: Config
) -> optax.GradientTransformation:
  """``"pretrain"``: AdamW with warm-up, cosine decay and clipping; ``"adamw"``;
  ``"profit"`` / ``"profit_sgd"``: PROFIT around AdamW / SGD with momentum 0.9,
  reference SGD at ``lr / profit_ratio``."""
  if method == "pretrain":
    steps = max(config.pretrain_steps, config.pretrain_warmup + 1)
    schedule = optax.warmup_cosine_decay_schedule(
      0.0, lr, config.pretrain_warmup, steps, end_value=lr / 10
    )
    adamw = optax.adamw(schedule, weight_decay=config.weight_decay)
    return optax.chain(optax.clip_by_global_norm(1.0), adamw)
  if method not in checkpointing.METHODS:
    raise ValueError(
      f"`method` must be one of {checkpointing.METHODS} or 'pretrain', got {method!r}."
    )
  adamw = optax.adamw(lr, weight_decay=config.weight_decay)
  if method == "adamw":
    return adamw
  inner = adamw if method == "profit" else optax.sgd(lr, momentum=0.9)
  return optax_profit.profit(inner, ref=lr / config.profit_ratio, n_ref=config.n_ref)


def make_sharded_train_step(
  loss_fn, tx, mesh, param_shardings, state_shardings, cycle_length, per_call=False
) -> Callable[..., Any]:
  """``step(params, opt_state, batches) -> (params, opt_state, metrics)``, jitted.

  ``batches``: int32 ``[cycle_length, batch, seq + 1]``, one PROFIT cycle per
  call (``optax_profit.make_train_step``), or with ``per_call`` one batch and
  one ``tx.update``. Params and state keep their shardings and are donated.
  """

  def one_update(params, opt_state, batches):
    loss, grads = jax.value_and_grad(loss_fn)(params, batches[0])
    updates, opt_state = tx.update(grads, opt_state, params)
    metrics = {"loss": loss[None]}
    if isinstance(opt_state, optax_profit.ProfitState):  # The last main step's.
      metrics.update({k: getattr(opt_state.diagnostics, k) for k in DIAGNOSTICS})
    return optax.apply_updates(params, updates), opt_state, metrics

  cycle = optax_profit.make_train_step(
    loss_fn, tx, cycle_length=cycle_length, donate=False
  )
  return jax.jit(
    one_update if per_call else cycle,
    in_shardings=(param_shardings, state_shardings, models.batch_sharding(mesh)),
    out_shardings=(param_shardings, state_shardings, models.replicated(mesh)),
    donate_argnums=(0, 1),
  )


class Experiment:
  """Data, mesh, model and compiled steps shared by every run.

  ``stop_after_step`` (fault injection): every process exits with
  :data:`EXIT_STOPPED` right after the first checkpoint at this batch or later.
  """

  def __init__(
    self, config: Config, workdir, mesh=None, show_progress=True, stop_after_step=None
  ):
    default.validate(config)
    self.config, self.workdir = config, pathlib.Path(workdir)
    self.stop_after_step = stop_after_step
    self.mesh = mesh or models.make_mesh(config.mesh_shape)
    default.validate(config, self.mesh.shape["data"])
    self.domains = input_pipeline.load_domains(config.split_letter, config.val_mod)
    # Validation windows by batch, this process's rows of each.
    local = config.batch_size // jax.process_count()
    rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    shape = (-1, config.batch_size, config.seq_len + 1)
    self.eval_sets = {
      name: input_pipeline.eval_windows(
        d.val, config.eval_windows, config.seq_len
      ).reshape(shape)[:, rows]
      for name, d in self.domains.items()
    }
    sizes = (config.d_model, config.num_layers, config.num_heads, config.d_ff)
    self.model = models.TransformerLM(input_pipeline.VOCAB_SIZE, *sizes, config.seq_len)
    self.loss_fn = make_loss_fn(self.model, self.mesh)
    self.param_shardings, self.abstract_params = models.params_layout(
      self.model, self.mesh
    )
    self._eval_step = jax.jit(
      self.loss_fn,
      in_shardings=(self.param_shardings, models.batch_sharding(self.mesh, False)),
      out_shardings=models.replicated(self.mesh),
    )
    self._optimizers: dict[checkpointing.RunSpec, tuple[Any, ...]] = {}
    self.show_progress = show_progress and jax.process_index() == 0
    self.cycle_length = config.n_ref + 1
    #: Batches per call of the train step: one cycle, or one batch (per call).
    self.batches_per_call = self.cycle_length if config.train_step == "cycle" else 1

  def init_params(self, seed: int) -> Params:
    """Freshly initialised params, on their shardings."""
    return models.init_params(self.model, self.mesh, seed)[0]

  def evaluate(self, params: Params) -> dict[str, float]:
    """Validation loss of both domains."""
    sharding = models.batch_sharding(self.mesh, stacked=False)
    losses = {
      name: [
        self._eval_step(params, jax.make_array_from_process_local_data(sharding, w))
        for w in windows
      ]
      for name, windows in self.eval_sets.items()
    }
    return {name: float(np.mean(jax.device_get(x))) for name, x in losses.items()}

  def optimizer(self, spec: checkpointing.RunSpec) -> tuple[Any, ...]:
    """``(tx, state_shardings, init_fn, step_fn)`` of a run, compiled once."""
    if spec not in self._optimizers:
      tx = make_optimizer(spec.method, spec.lr, self.config)
      params_sh, mesh = self.param_shardings, self.mesh
      state_sh = models.opt_state_shardings(tx, self.abstract_params, params_sh, mesh)
      step_fn = make_sharded_train_step(
        *(self.loss_fn, tx, mesh, params_sh, state_sh, self.cycle_length),
        per_call=self.config.train_step == "per_call",
      )
      init_fn = jax.jit(tx.init, out_shardings=state_sh)
      self._optimizers[spec] = (tx, state_sh, init_fn, step_fn)
    return self._optimizers[spec]

  def _whole_calls(self, n: int) -> int:
    """``n`` batches rounded up to whole calls of ``batches_per_call`` batches."""
    return -(-n // self.batches_per_call) * self.batches_per_call

  def _start(self, mngr, spec, params, first_eval):
    """``(params, opt_state, step, history, records)``: the run's latest
    checkpoint (``params`` deleted first: no device holds both), or ``params``
    afresh. ``records`` (None if fresh): the checkpointed ``(projected since
    the last evaluation, diagnostics)`` of PROFIT's main steps, so that a
    resumed run reports what an uninterrupted one does."""
    tx, state_shardings, init_fn, _ = self.optimizer(spec)
    if mngr.latest_step() is None:
      history = [{"step": 0, **(first_eval or self.evaluate(params))}]
      return params, init_fn(params), 0, history, None
    jax.tree.map(lambda x: x.delete(), params)
    abstract = checkpointing.TrainState(
      jax.ShapeDtypeStruct((), jnp.int32),
      self.abstract_params,
      jax.eval_shape(tx.init, self.abstract_params),
    )
    replicated = models.replicated(self.mesh)
    shardings = checkpointing.TrainState(
      replicated, self.param_shardings, state_shardings
    )
    target = checkpointing.abstract_state(abstract, shardings)
    state, extra = checkpointing.restore(mngr, target)
    projected = list(extra.get("projected_since_eval", []))
    records = (projected, [tuple(d) for d in extra.get("diagnostics", [])])
    return state.params, state.opt_state, int(state.step), extra["history"], records

  def train(
    self, spec, params, *, num_batches, domain, stream, checkpoint_dir, first_eval=None
  ) -> tuple[Params, dict[str, Any]]:
    """Trains ``params`` (donated) with ``spec``'s optimizer; ``(params, record)``.

    Continues from the latest checkpoint in ``checkpoint_dir``, if any
    (``params`` are then discarded). ``num_batches`` is rounded up to whole
    calls; ``domain`` (``"old"``, ``"new"``) and ``stream`` pick the batches;
    ``first_eval`` is the evaluation of ``params``, if known.
    """
    k, config = self.batches_per_call, self.config
    num_batches = self._whole_calls(num_batches)
    eval_every = self._whole_calls(config.eval_every)
    checkpoint_every = self._whole_calls(config.checkpoint_every)
    step_fn = self.optimizer(spec)[3]
    text = self.domains[domain].train
    process = (jax.process_index(), jax.process_count())
    batch_sharding = models.batch_sharding(self.mesh)
    start_time, first_call_s = time.perf_counter(), None  # The first call compiles.
    with checkpointing.manager(checkpoint_dir, max_to_keep=1) as mngr:
      params, opt_state, step, history, records = self._start(
        mngr, spec, params, first_eval
      )
      resumed_from = step if records is not None else None
      projected, diagnostics = records or ([], [])
      desc, off = f"{spec.name:<17}", not self.show_progress
      bar = tqdm.tqdm(
        total=num_batches, initial=step, desc=desc, unit="batch", disable=off
      )
      while step < num_batches:
        local = input_pipeline.train_batches(text, config, stream, step, k, *process)
        batches = jax.make_array_from_process_local_data(batch_sharding, local)
        params, opt_state, metrics = step_fn(params, opt_state, batches)
        if first_call_s is None:
          jax.block_until_ready(metrics)
          first_call_s = time.perf_counter() - start_time
        step += k
        bar.update(k)
        # After a main step: every call of the cycle path, every
        # cycle_length-th call of the per-call path.
        if "projected" in metrics and step % self.cycle_length == 0:
          projected.append(metrics["projected"])
          diagnostics.append((step, *(metrics[m] for m in DIAGNOSTICS)))
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
          self._save(mngr, step, params, opt_state, history, projected, diagnostics)
      bar.close()
    wall_s = time.perf_counter() - start_time
    timing = dict(
      resumed_from_step=resumed_from, wall_s=wall_s, first_call_s=first_call_s
    )
    return params, self._record(spec, num_batches, history, timing, diagnostics)

  def _save(self, mngr, step, params, opt_state, history, projected, diagnostics):
    """Saves the state, the history and PROFIT's records; then maybe stops."""
    step_array = jax.device_put(jnp.int32(step), models.replicated(self.mesh))
    extra = {
      "history": history,
      "projected_since_eval": [bool(p) for p in projected],
      "diagnostics": [_diagnostic(d) for d in diagnostics],
    }
    state = checkpointing.TrainState(step_array, params, opt_state)
    checkpointing.save(mngr, state, extra=extra)
    stop = self.stop_after_step
    if stop is not None and step >= stop:  # Fault injection: exit as if killed.
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"stop_after_step_{step}")
      if jax.process_index() == 0:
        message = f"stopped after the checkpoint at batch {step} (--stop-after-step)"
        print(f"\n{message}", flush=True)
      os._exit(EXIT_STOPPED)

  def _record(self, spec, num_batches, history, timing, diagnostics) -> dict[str, Any]:
    """A run's record: its settings, eval history, final losses and timings."""
    profit = spec.method.startswith("profit")
    record = {
      "name": spec.name,
      "method": spec.method,
      "lr": spec.lr,
      "batches": num_batches,
      "optimizer_steps": num_batches // self.cycle_length if profit else num_batches,
      "final": {name: history[-1][name] for name in ("old", "new")},
      "history": history,
      **timing,
    }
    if profit:
      record["ref_lr"] = spec.lr / self.config.profit_ratio
      record["diagnostics"] = [
        dict(zip(("step", *DIAGNOSTICS), _diagnostic(d), strict=True))
        for d in jax.device_get(diagnostics)
      ]
    return record


def _diagnostic(d: tuple[Any, ...]) -> list[Any]:
  """``(step, omega, delta_norm, projected)`` as JSON values."""
  step, omega, delta_norm, projected = d
  return [int(step), float(omega), float(delta_norm), bool(projected)]


def train_and_evaluate(
  config: Config, workdir, show_progress=True, stop_after_step=None
):
  """Pre-trains, fine-tunes every run; process 0 writes the results to ``workdir``.

  ``stop_after_step``: fault injection, see :class:`Experiment`.
  """
  workdir = pathlib.Path(workdir)
  exp = Experiment(config, workdir, None, show_progress, stop_after_step)
  started = time.perf_counter()
  params, pre_record = exp.train(
    checkpointing.RunSpec("pretrain", config.pretrain_lr),
    exp.init_params(config.seed),
    num_batches=config.pretrain_steps,
    domain="old",
    stream=PRETRAIN_STREAM,
    checkpoint_dir=checkpointing.pretrain_dir(workdir, config),
  )
  finetune = []
  for spec in checkpointing.finetune_specs(config):
    _, record = exp.train(
      spec,
      jax.tree.map(lambda x: x.copy(), params),
      num_batches=config.ft_steps,
      domain="new",
      stream=FINETUNE_STREAM,
      checkpoint_dir=checkpointing.finetune_dir(workdir, config, spec),
      first_eval=pre_record["final"],
    )
    finetune.append(record)
  results = {
    "config": dataclasses.asdict(config),
    "environment": reporting.environment(exp.mesh),
    "data": reporting.data_summary(exp.domains),
    "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
    "pretrained": pre_record["final"],
    "pretrain": pre_record,
    "finetune": finetune,
    "wall_s": time.perf_counter() - started,
  }
  if jax.process_index() == 0:
    reporting.write(results, workdir)
  return results
