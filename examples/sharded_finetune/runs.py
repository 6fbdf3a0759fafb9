"""Run naming, caching and resume of the sharded fine-tuning example.

A run is a :class:`RunSpec` (method and learning rate). Its checkpoint
directory under ``workdir/checkpoints`` is named after the run and a digest of
everything that determines its result (:func:`pretrain_key`,
:func:`finetune_key`). Started again with the same configuration, a run
resumes from its latest checkpoint (:func:`resume`), and a finished one (the
pre-training, in particular, which every fine-tuning run starts from) is read
back instead of retrained; a configuration change that alters a run changes
its digest, so no run continues from a stale checkpoint.
"""

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp

from examples.common.runs import digest
from examples.sharded_finetune import checkpointing, sharding
from examples.sharded_finetune.configs import default

Config = default.Config
Params = Any

#: Bump when training changes in a way the config does not show (it keys the
#: checkpoint directories).
CHECKPOINT_VERSION = 1
#: Fine-tuning methods; pre-training is the method ``"pretrain"``.
METHODS = ("adamw", "profit", "profit_sgd")
#: The config fields that determine the pre-trained model.
_PRETRAIN_FIELDS = (
  "split_letter",
  "val_mod",
  "seq_len",
  "batch_size",
  "d_model",
  "num_layers",
  "num_heads",
  "d_ff",
  "pretrain_steps",
  "pretrain_lr",
  "pretrain_warmup",
  "weight_decay",
  "seed",
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run.

  Attributes:
    method: ``"pretrain"``, ``"adamw"`` or ``"profit"``.
    lr: its (peak, main) learning rate.
  """

  method: str
  lr: float

  @property
  def name(self) -> str:
    """E.g. ``profit_lr1e-03``."""
    return f"{self.method}_lr{self.lr:.0e}"


def finetune_specs(config: Config) -> list[RunSpec]:
  """The fine-tuning runs of ``config``: AdamW's, PROFIT's, PROFIT(SGD)'s."""
  return (
    [RunSpec("adamw", lr) for lr in config.adamw_lrs]
    + [RunSpec("profit", lr) for lr in config.profit_lrs]
    + [RunSpec("profit_sgd", lr) for lr in config.profit_sgd_lrs]
  )


def pretrain_key(config: Config) -> dict[str, Any]:
  """Everything that determines the pre-trained model."""
  key = {f: getattr(config, f) for f in _PRETRAIN_FIELDS}
  key["version"] = CHECKPOINT_VERSION
  if config.train_step != "cycle":  # Keyed only when set: old keys stay valid.
    key["train_step"] = config.train_step
  return key


def finetune_key(config: Config, spec: RunSpec) -> dict[str, Any]:
  """Everything that determines the fine-tuning run ``spec``."""
  return {
    **pretrain_key(config),
    "run": dataclasses.asdict(spec),
    "ft_steps": config.ft_steps,
    "n_ref": config.n_ref,
    "profit_ratio": (config.profit_ratio if spec.method.startswith("profit") else None),
  }


def pretrain_dir(workdir: pathlib.Path, config: Config) -> pathlib.Path:
  """The pre-training's checkpoint directory, e.g. ``pretrain-d080d5ae68``."""
  return workdir / "checkpoints" / f"pretrain-{digest(pretrain_key(config))}"


def finetune_dir(workdir: pathlib.Path, config: Config, spec: RunSpec) -> pathlib.Path:
  """A fine-tuning run's checkpoint directory, e.g. ``profit_lr1e-03-<digest>``."""
  return workdir / "checkpoints" / f"{spec.name}-{digest(finetune_key(config, spec))}"


def restore_target(
  tx: optax.GradientTransformation,
  abstract_params: Params,
  param_shardings: Params,
  state_shardings: optax.OptState,
  mesh: jax.sharding.Mesh,
) -> checkpointing.TrainState:
  """The restore target of a run's state, from shapes alone.

  Args:
    tx: the run's optimizer.
    abstract_params: the params' ``jax.ShapeDtypeStruct`` tree.
    param_shardings: the params' shardings.
    state_shardings: the optimizer state's shardings.
    mesh: the device mesh (the step is replicated on it).

  Returns:
    A :class:`checkpointing.TrainState` of ``jax.ShapeDtypeStruct`` leaves
    carrying their target shardings.
  """
  return checkpointing.abstract_state(
    checkpointing.TrainState(
      step=jax.ShapeDtypeStruct((), jnp.int32),
      params=abstract_params,
      opt_state=jax.eval_shape(tx.init, abstract_params),
    ),
    checkpointing.TrainState(
      step=sharding.replicated(mesh),
      params=param_shardings,
      opt_state=state_shardings,
    ),
  )


def resume(
  mngr: ocp.CheckpointManager,
  target: checkpointing.TrainState,
  discard: Params,
) -> tuple[checkpointing.TrainState, dict[str, Any]] | None:
  """The latest checkpoint's state and JSON ``extra``, if there is one.

  Args:
    mngr: the run's checkpoint manager.
    target: from :func:`restore_target`.
    discard: the params the run would otherwise start from; deleted before
      the restore (so that a device never holds both), if there is a
      checkpoint.

  Returns:
    ``(state, extra)`` (``extra["history"]``: the eval history), or ``None``
    if the run has no checkpoint yet.
  """
  if mngr.latest_step() is None:
    return None
  jax.tree.map(lambda x: x.delete(), discard)
  state, extra = checkpointing.restore(mngr, target)
  return state, extra
