"""A byte-level transformer LM (Flax linen), its ``(data, model)`` mesh and shardings.

Params are named by logical axes, which :data:`LOGICAL_AXIS_RULES` maps onto
the mesh; each optimizer state leaf gets the sharding of the param it mirrors.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Params = Any
AXES = ("data", "model")

#: Logical axis -> mesh axis. ``embed`` on ``data`` is the FSDP part (every
#: weight matrix is split along its model-width dimension over the data-parallel
#: devices); ``mlp``, ``heads`` and ``vocab`` on ``model`` is tensor
#: parallelism. Activations use ``batch`` (on ``data``) and unsharded names.
LOGICAL_AXIS_RULES = (
  *(("batch", "data"), ("embed", "data"), ("mlp", "model"), ("heads", "model")),
  *(("vocab", "model"), ("length", None), ("act_length", None), ("act_embed", None)),
)
_ACTIVATIONS = ("batch", "act_length", "act_embed")
_NORMAL, _ZEROS = nn.initializers.normal(0.02), nn.initializers.zeros


def _init(*names: str, init: Any = _NORMAL) -> Any:
  return nn.with_logical_partitioning(init, names)


def _layer_norm(name: str) -> nn.LayerNorm:
  one, zero = (_init("embed", init=f) for f in (nn.initializers.ones, _ZEROS))
  return nn.LayerNorm(scale_init=one, bias_init=zero, name=name)


def _dense(features: int, axes: tuple[str, str], name: str, bias=False) -> nn.Dense:
  inits = dict(kernel_init=_init(*axes), bias_init=_init(axes[1], init=_ZEROS))
  return nn.Dense(features, use_bias=bias, name=name, **inits)


class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention over ``[batch, length, embed]``."""

  num_heads: int
  head_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, length, d_model = x.shape
    shape = (batch, length, self.num_heads, self.head_dim)
    features = self.num_heads * self.head_dim
    qkv = [
      _dense(features, ("embed", "heads"), name)(x).reshape(shape)
      for name in ("query", "key", "value")
    ]
    mask = nn.make_causal_mask(jnp.ones((batch, length), jnp.bool_))
    y = nn.dot_product_attention(*qkv, mask=mask).reshape(batch, length, features)
    return _dense(d_model, ("heads", "embed"), "out")(y)


class Block(nn.Module):
  """Pre-LayerNorm transformer block: attention and a GELU MLP."""

  num_heads: int
  d_ff: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d_model = x.shape[-1]
    heads, head_dim = self.num_heads, d_model // self.num_heads
    attention = CausalSelfAttention(heads, head_dim, name="attention")
    x = x + attention(_layer_norm("ln_attention")(x))
    h = _dense(self.d_ff, ("embed", "mlp"), "mlp_in", True)(_layer_norm("ln_mlp")(x))
    h = _dense(d_model, ("mlp", "embed"), "mlp_out", True)(nn.gelu(h))
    return nn.with_logical_constraint(x + h, _ACTIVATIONS)


class TransformerLM(nn.Module):
  """Decoder-only byte-level LM with learned positions and tied embeddings."""

  vocab_size: int = 256
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  d_ff: int = 512
  max_len: int = 256

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    """float32 logits ``[batch, length, vocab]`` of int32 ``[batch, length]``."""
    length = tokens.shape[-1]
    if length > self.max_len:
      raise ValueError(
        f"Sequences of length {length} exceed `max_len` ({self.max_len})."
      )
    init = _init("vocab", "embed")
    embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=init, name="embed")
    shape = (self.max_len, self.d_model)
    positions = self.param("positions", _init("length", "embed"), shape)
    x = embed(tokens) + positions[None, :length]
    x = nn.with_logical_constraint(x, _ACTIVATIONS)
    for i in range(self.num_layers):
      x = Block(self.num_heads, self.d_ff, name=f"block_{i}")(x)
    return embed.attend(_layer_norm("ln_final")(x)).astype(jnp.float32)


def _boxed_init(model: TransformerLM) -> Callable[[jax.Array], Params]:
  """``rng -> params`` of ``model``, boxed with their logical axes."""
  return lambda rng: model.init(rng, jnp.zeros((1, model.max_len), jnp.int32))["params"]


def params_layout(model: TransformerLM, mesh: Mesh) -> tuple[Params, Params]:
  """``(shardings, abstract params)`` of ``model`` on ``mesh``, from shapes alone."""
  boxed = jax.eval_shape(_boxed_init(model), jax.random.key(0))
  return param_shardings(boxed, mesh, LOGICAL_AXIS_RULES), nn.meta.unbox(boxed)


def init_params(model: TransformerLM, mesh: Mesh, seed: int) -> tuple[Params, Params]:
  """``(params, shardings)``: no device ever holds the unsharded params."""
  shardings, _ = params_layout(model, mesh)
  init = jax.jit(
    lambda rng: nn.meta.unbox(_boxed_init(model)(rng)), out_shardings=shardings
  )
  return init(jax.random.key(seed)), shardings


def make_mesh(
  shape: Sequence[int] | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """An ``AxisType.Auto`` mesh of ``shape`` (``config.mesh_shape``) over ``devices``."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if shape is None or tuple(shape) == (0, 0):
    model = 2 if n % 2 == 0 else 1
    shape = (n // model, model)
  shape = tuple(int(s) for s in shape)
  if shape.count(-1) == 1:
    known = shape[0] if shape[1] == -1 else shape[1]
    if known <= 0 or n % known:
      raise ValueError(f"`mesh_shape` {shape} does not divide {n} devices.")
    shape = tuple(n // known if s == -1 else s for s in shape)
  if min(shape) < 1 or shape[0] * shape[1] != n:
    raise ValueError(f"`mesh_shape` {shape} must multiply to the devices' number {n}.")
  auto = (jax.sharding.AxisType.Auto,) * 2
  return jax.make_mesh(shape, AXES, axis_types=auto, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """The fully replicated sharding on ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def param_shardings(boxed_params: Params, mesh: Mesh, rules) -> Params:
  """``NamedSharding``s of ``model.init``'s boxed params by their logical axes."""
  specs = nn.get_partition_spec(boxed_params)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  leaves = jax.tree_util.tree_leaves_with_path(nn.meta.unbox(boxed_params))
  for (path, leaf), s in zip(leaves, jax.tree.leaves(shardings), strict=True):
    for dim, axes in zip(leaf.shape, s.spec, strict=False):
      axes = (axes,) if isinstance(axes, str) else (axes or ())
      size = int(np.prod([mesh.shape[a] for a in axes]))
      if dim % size:
        raise ValueError(
          f"Param {jax.tree_util.keystr(path)} of shape {leaf.shape} cannot be "
          f"sharded {s.spec} on mesh {dict(mesh.shape)}: {dim} is not "
          f"divisible by {size}. Change the model size or `mesh_shape`."
        )
  return shardings


def opt_state_shardings(
  tx: optax.GradientTransformation, params: Params, shardings: Params, mesh: Mesh
) -> Params:
  """Shardings of ``tx.init(params)``: each param-like leaf gets its param's.

  ``jax.jit(tx.init)`` needs them as ``out_shardings``: else it replicates the
  state that does not depend on the params' values (AdamW's zero moments).
  """
  return optax.tree_map_params(
    tx,
    lambda _, sharding: sharding,
    jax.eval_shape(tx.init, params),
    shardings,
    transform_non_params=lambda _: replicated(mesh),
  )


def batch_sharding(mesh: Mesh, stacked: bool = True) -> NamedSharding:
  """Examples split over ``data``; ``stacked``: ``[cycle_length, batch, ...]``."""
  spec = PartitionSpec(None, "data") if stacked else PartitionSpec("data")
  return NamedSharding(mesh, spec)
