"""The device mesh and the shardings of params, optimizer state and batches.

The mesh has two axes, ``data`` and ``model`` (``jax.sharding.AxisType.Auto``:
classic ``jax.jit`` with ``in_shardings``/``out_shardings``, XLA's SPMD
partitioner inserts the communication). Params are sharded by the logical
axis rules of ``models.LOGICAL_AXIS_RULES`` (FSDP over ``data``, tensor
parallelism over ``model``); the optimizer state gets, leaf by leaf, the
sharding of the param it mirrors (``optax.tree_map_params``), so PROFIT's
``theta_ref`` and AdamW's moments are sharded exactly like the params and
scalars (step counts, PROFIT's ``omega``) are replicated.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "model")
PyTree = Any


def make_mesh(
  shape: Sequence[int] | None = None,
  devices: Sequence[jax.Device] | None = None,
) -> Mesh:
  """A ``(data, model)`` mesh over ``devices`` (default: all devices).

  Args:
    shape: ``(data, model)`` sizes; ``None`` or ``(0, 0)`` picks ``model = 2``
      when the device count is even (else 1) and ``data`` = the rest. One
      ``-1`` entry is inferred from the other.
    devices: the devices; defaults to ``jax.devices()`` (all processes).

  Returns:
    A mesh with ``AxisType.Auto`` axes named :data:`AXES`.

  Raises:
    ValueError: if the shape does not multiply to the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if shape is None or tuple(shape) == (0, 0):
    model = 2 if n % 2 == 0 else 1
    shape = (n // model, model)
  shape = tuple(int(s) for s in shape)
  if len(shape) != 2:
    raise ValueError(f"`mesh_shape` must have 2 entries (data, model), got {shape}.")
  if shape.count(-1) == 1:
    known = shape[0] if shape[1] == -1 else shape[1]
    if known <= 0 or n % known:
      raise ValueError(f"`mesh_shape` {shape} does not divide {n} devices.")
    shape = tuple(n // known if s == -1 else s for s in shape)
  if min(shape) < 1 or shape[0] * shape[1] != n:
    raise ValueError(
      f"`mesh_shape` {shape} must multiply to the number of devices ({n})."
    )
  auto = (jax.sharding.AxisType.Auto,) * 2
  return jax.make_mesh(shape, AXES, axis_types=auto, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """The fully replicated sharding on ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def param_shardings(
  boxed_params: PyTree,
  mesh: Mesh,
  rules: Sequence[tuple[str, str | None]],
) -> PyTree:
  """Shardings of the params from their logical axis names.

  Args:
    boxed_params: the params as returned by ``model.init`` (or its
      ``jax.eval_shape``), leaves wrapped in ``nn.LogicallyPartitioned``.
    mesh: the device mesh.
    rules: logical axis rules, e.g. ``models.LOGICAL_AXIS_RULES``.

  Returns:
    A tree of ``NamedSharding`` with the structure of the unboxed params.

  Raises:
    ValueError: naming the param, if a sharded dimension is not divisible by
      its mesh axes' size.
  """
  specs = nn.get_partition_spec(boxed_params)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  shapes = nn.meta.unbox(boxed_params)
  for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
    sharding = _lookup(shardings, path)
    for dim, axes in zip(leaf.shape, sharding.spec, strict=False):
      axes = (axes,) if isinstance(axes, str) else (axes or ())
      size = int(np.prod([mesh.shape[a] for a in axes]))
      if dim % size:
        raise ValueError(
          f"Param {jax.tree_util.keystr(path)} of shape {leaf.shape} cannot be "
          f"sharded {sharding.spec} on mesh {dict(mesh.shape)}: {dim} is not "
          f"divisible by {size}. Change the model size or `mesh_shape`."
        )
  return shardings


def _lookup(tree: PyTree, path: tuple[Any, ...]) -> Any:
  for key in path:
    tree = tree[key.key] if hasattr(key, "key") else tree[key.idx]
  return tree


def opt_state_shardings(
  tx: optax.GradientTransformation,
  params: PyTree,
  shardings: PyTree,
  mesh: Mesh,
) -> PyTree:
  """Shardings of ``tx``'s state: each param-like leaf gets its param's.

  Args:
    tx: the optimizer (``optax_profit.profit(...)``, ``optax.adamw(...)``).
    params: params or their ``jax.ShapeDtypeStruct``s.
    shardings: the params' shardings (same structure).
    mesh: the device mesh (non-param leaves are replicated on it).

  Returns:
    A tree of ``NamedSharding`` with the structure of ``tx.init(params)``.
  """
  abstract_state = jax.eval_shape(tx.init, params)
  return optax.tree_map_params(
    tx,
    lambda _, sharding: sharding,
    abstract_state,
    shardings,
    transform_non_params=lambda _: replicated(mesh),
  )


def init_opt_state(
  tx: optax.GradientTransformation, params: PyTree, shardings: PyTree
) -> PyTree:
  """``tx.init(params)`` compiled, with its output placed on ``shardings``.

  ``jax.jit(tx.init)`` alone replicates state that does not depend on the
  params' values (``zeros_like`` moments, under ``AxisType.Auto``): pass
  ``out_shardings`` (from :func:`opt_state_shardings`).

  Args:
    tx: the optimizer.
    params: the (sharded) params.
    shardings: from :func:`opt_state_shardings`.

  Returns:
    The optimizer state, laid out on ``shardings``.
  """
  return jax.jit(tx.init, out_shardings=shardings)(params)


def batch_sharding(mesh: Mesh, stacked: bool = True) -> NamedSharding:
  """Sharding of token batches: examples split over ``data``.

  Args:
    mesh: the device mesh.
    stacked: whether the batches carry a leading axis of consecutive batches
      (``[cycle_length, batch, seq + 1]``), as ``optax_profit.make_train_step``
      takes.

  Returns:
    ``P(None, "data")`` when stacked, else ``P("data")``.
  """
  spec = PartitionSpec(None, "data") if stacked else PartitionSpec("data")
  return NamedSharding(mesh, spec)


def global_array(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """Assembles a global array from this process's rows.

  With several processes (``jax.distributed``), each passes the rows of the
  data-parallel slice it owns (see ``input_pipeline.train_batches``); with one
  process, ``local`` is the whole array.

  Args:
    local: this process's part of the array.
    sharding: the global array's sharding.

  Returns:
    The global ``jax.Array``.
  """
  return jax.make_array_from_process_local_data(sharding, local)
