"""The runs, their checkpoint folders, and the whole training state in orbax.

A run's folder is named after the run and a digest of everything that
determines its result: a rerun resumes from its latest checkpoint, a changed
run gets a new folder. A :class:`TrainState` is restored straight onto its
target shardings, so that every process reads only its own shards.

Example:
  >>> import tempfile, jax.numpy as jnp, optax
  >>> import optax_profit
  >>> from examples.sharded_finetune import checkpointing
  >>> params = {"w": jnp.ones(3)}
  >>> tx = optax_profit.profit(optax.adamw(1e-3), ref=1e-5)
  >>> state = checkpointing.TrainState(jnp.int32(0), params, tx.init(params))
  >>> with checkpointing.manager(tempfile.mkdtemp()) as mngr:
  ...   _ = checkpointing.save(mngr, state, extra={"note": "hi"})
  ...   target = checkpointing.abstract_state(state)
  ...   restored, extra = checkpointing.restore(mngr, target)
  >>> extra["note"], type(restored.opt_state).__name__
  ('hi', 'ProfitState')
"""

import dataclasses
import pathlib
from typing import Any

import flax.struct
import jax
import optax
import orbax.checkpoint as ocp

from examples.common.runs import run_name
from examples.sharded_finetune.configs import default

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """``step`` (int32, batches consumed: the data position), params, opt state."""

  step: jax.Array
  params: optax.Params
  opt_state: optax.OptState


def manager(directory, *, max_to_keep: int | None = 2) -> ocp.CheckpointManager:
  """An orbax ``CheckpointManager`` (a context manager) in ``directory``."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def save(mngr: ocp.CheckpointManager, state: TrainState, *, extra=None) -> bool:
  """Saves ``state`` and a JSON ``extra`` as step ``int(state.step)``; waits."""
  items = dict(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra or {}))
  saved = mngr.save(int(state.step), args=ocp.args.Composite(**items))
  mngr.wait_until_finished()
  return saved


def abstract_state(state: PyTree, shardings: PyTree | None = None) -> PyTree:
  """The restore target: ``state``'s shapes and dtypes (it may be abstract) on
  ``shardings`` (default: each leaf's own), as ``jax.ShapeDtypeStruct``s."""
  if shardings is None:
    shardings = jax.tree.map(lambda x: x.sharding, state)
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
  )


def restore(mngr: ocp.CheckpointManager, target: PyTree) -> tuple[PyTree, dict]:
  """``(state, extra)`` of the latest checkpoint, on ``target``'s shardings.

  Raises ``FileNotFoundError`` if there is no checkpoint.
  """
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {mngr.directory}.")
  items = dict(state=ocp.args.StandardRestore(target), extra=ocp.args.JsonRestore())
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  return restored.state, dict(restored.extra or {})


#: Bump when training changes in a way the config does not show.
CHECKPOINT_VERSION = 1
#: Fine-tuning methods; pre-training is the method ``"pretrain"``.
METHODS = ("adamw", "profit", "profit_sgd")
#: The config fields that determine the pre-trained model.
_PRETRAIN_FIELDS = (
  *("split_letter", "val_mod", "seq_len", "batch_size", "d_model", "num_layers"),
  *("num_heads", "d_ff", "pretrain_steps", "pretrain_lr", "pretrain_warmup"),
  *("weight_decay", "seed"),
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run: ``"pretrain"`` or one of :data:`METHODS`, and its learning rate."""

  method: str
  lr: float

  @property
  def name(self) -> str:
    """E.g. ``profit_lr1e-03``."""
    return f"{self.method}_lr{self.lr:.0e}"


def finetune_specs(config: default.Config) -> list[RunSpec]:
  """The fine-tuning runs of ``config``: AdamW's, PROFIT's, PROFIT(SGD)'s."""
  sweeps = (config.adamw_lrs, config.profit_lrs, config.profit_sgd_lrs)
  return [RunSpec(m, lr) for m, lrs in zip(METHODS, sweeps, strict=True) for lr in lrs]


def pretrain_key(config: default.Config) -> dict[str, Any]:
  """Everything that determines the pre-trained model."""
  key = {f: getattr(config, f) for f in _PRETRAIN_FIELDS}
  key["version"] = CHECKPOINT_VERSION
  if config.train_step != "cycle":  # Keyed only when set: old keys stay valid.
    key["train_step"] = config.train_step
  return key


def finetune_key(config: default.Config, spec: RunSpec) -> dict[str, Any]:
  """Everything that determines the fine-tuning run ``spec``."""
  profit = spec.method.startswith("profit")
  return {
    **pretrain_key(config),
    "run": dataclasses.asdict(spec),
    "ft_steps": config.ft_steps,
    "n_ref": config.n_ref,
    "profit_ratio": config.profit_ratio if profit else None,
  }


def pretrain_dir(workdir: pathlib.Path, config: default.Config) -> pathlib.Path:
  """The pre-training's checkpoint folder, e.g. ``pretrain-d080d5ae68``."""
  return workdir / "checkpoints" / run_name("pretrain", pretrain_key(config))


def finetune_dir(workdir: pathlib.Path, config, spec: RunSpec) -> pathlib.Path:
  """A fine-tuning run's checkpoint folder, e.g. ``profit_lr1e-03-<digest>``."""
  return workdir / "checkpoints" / run_name(spec.name, finetune_key(config, spec))
