"""Saving and restoring the whole training state with orbax.

The state is a :class:`TrainState`: ``step`` (batches consumed, which also
fixes the data position, see ``input_pipeline``), ``params`` and
``opt_state`` (for PROFIT a ``ProfitState``: ``theta_ref``, both optimizers'
states, the update count that fixes the phase in the cycle, and the last main
step's diagnostics). Restoring it all resumes a run exactly where it stopped,
even between a reference step and its main step.

Sharded states are restored straight onto their target shardings: the target
is the tree of ``jax.ShapeDtypeStruct(shape, dtype, sharding=...)``
(:func:`abstract_state`), so every process reads only its own shards. A
small JSON ``extra`` item (an eval history, say) rides along in the same
checkpoint.

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

import pathlib
from typing import Any

import flax.struct
import jax
import optax
import orbax.checkpoint as ocp

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue.

  Attributes:
    step: int32 scalar, number of batches consumed so far.
    params: the model params.
    opt_state: the optimizer state.
  """

  step: jax.Array
  params: optax.Params
  opt_state: optax.OptState


def manager(
  directory: str | pathlib.Path,
  *,
  max_to_keep: int | None = 2,
  save_interval_steps: int = 1,
) -> ocp.CheckpointManager:
  """An orbax ``CheckpointManager`` for :class:`TrainState` checkpoints.

  Args:
    directory: where the step folders go (created if missing; made absolute).
    max_to_keep: how many recent checkpoints to keep (``None``: all).
    save_interval_steps: :func:`save` without ``force`` skips steps that are
      not multiples of this.

  Returns:
    The manager. Use it as a context manager, or call ``close()``.
  """
  options = ocp.CheckpointManagerOptions(
    max_to_keep=max_to_keep,
    save_interval_steps=save_interval_steps,
    create=True,
  )
  return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def save(
  mngr: ocp.CheckpointManager,
  state: TrainState,
  *,
  extra: dict[str, Any] | None = None,
  force: bool = False,
  wait: bool = True,
) -> bool:
  """Saves ``state`` (and a JSON ``extra``) under step ``int(state.step)``.

  Args:
    mngr: from :func:`manager`.
    state: the training state (sharded or not).
    extra: a JSON-serialisable dict stored beside the state.
    force: save even if the step is not a multiple of ``save_interval_steps``.
    wait: block until the checkpoint is on disk (else it is written in the
      background; call ``mngr.wait_until_finished()`` before exiting).

  Returns:
    Whether a checkpoint was saved.
  """
  saved = mngr.save(
    int(state.step),
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      extra=ocp.args.JsonSave(extra or {}),
    ),
    force=force,
  )
  if wait:
    mngr.wait_until_finished()
  return saved


def abstract_state(state: PyTree, shardings: PyTree | None = None) -> PyTree:
  """The restore target: ``jax.ShapeDtypeStruct`` leaves with shardings.

  Args:
    state: a concrete or abstract (``jax.eval_shape``) state giving the tree
      structure, shapes and dtypes.
    shardings: target shardings with the structure of ``state``; defaults to
      each leaf's own ``.sharding``.

  Returns:
    The tree of ``jax.ShapeDtypeStruct(shape, dtype, sharding=...)``.
  """
  if shardings is None:
    shardings = jax.tree.map(lambda x: x.sharding, state)
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    state,
    shardings,
  )


def restore(
  mngr: ocp.CheckpointManager,
  target: PyTree,
  step: int | None = None,
) -> tuple[PyTree, dict[str, Any]]:
  """Restores a :class:`TrainState` onto the target's shardings.

  Args:
    mngr: from :func:`manager`.
    target: from :func:`abstract_state` (structure, shapes, dtypes and
      shardings of the restored state).
    step: the step to restore; defaults to the latest.

  Returns:
    ``(state, extra)``.

  Raises:
    FileNotFoundError: if there is no checkpoint (at ``step``).
  """
  step = mngr.latest_step() if step is None else step
  if step is None or step not in mngr.all_steps():
    raise FileNotFoundError(
      f"No checkpoint{'' if step is None else f' at step {step}'} in {mngr.directory}."
    )
  restored = mngr.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target),
      extra=ocp.args.JsonRestore(),
    ),
  )
  return restored.state, dict(restored.extra or {})
