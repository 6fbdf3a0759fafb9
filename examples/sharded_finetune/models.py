"""A small decoder-only transformer language model over bytes (Flax linen).

Every parameter is created with :func:`flax.linen.with_logical_partitioning`
and named by *logical* axes (``embed``, ``mlp``, ``heads``, ``vocab``,
``length``); :data:`LOGICAL_AXIS_RULES` maps them onto the mesh axes
``data`` and ``model`` (see ``sharding.py``). Activations are constrained to
be split along the batch (``data``) only.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from examples.sharded_finetune import sharding

Params = Any

#: Logical axis -> mesh axis. ``embed`` on ``data`` is the FSDP part (every
#: weight matrix is split along its model-width dimension over the data-parallel
#: devices); ``mlp``, ``heads`` and ``vocab`` on ``model`` is tensor
#: parallelism. Activations use ``batch`` (on ``data``) and unsharded names.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
  ("batch", "data"),
  ("embed", "data"),
  ("mlp", "model"),
  ("heads", "model"),
  ("vocab", "model"),
  ("length", None),
  ("act_length", None),
  ("act_embed", None),
)


def _init(
  initializer: nn.initializers.Initializer, names: Sequence[str]
) -> nn.initializers.Initializer:
  return nn.with_logical_partitioning(initializer, tuple(names))


class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention.

  Attributes:
    num_heads: attention heads.
    head_dim: features per head.
  """

  num_heads: int
  head_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Attends over ``x`` ``[batch, length, embed]`` with a causal mask."""
    init = nn.initializers.normal(0.02)
    batch, length, d_model = x.shape
    features = self.num_heads * self.head_dim
    qkv = []
    for name in ("query", "key", "value"):
      y = nn.Dense(
        features,
        use_bias=False,
        kernel_init=_init(init, ("embed", "heads")),
        name=name,
      )(x)
      qkv.append(y.reshape(batch, length, self.num_heads, self.head_dim))
    mask = nn.make_causal_mask(jnp.ones((batch, length), jnp.bool_))
    y = nn.dot_product_attention(*qkv, mask=mask)
    return nn.Dense(
      d_model,
      use_bias=False,
      kernel_init=_init(init, ("heads", "embed")),
      name="out",
    )(y.reshape(batch, length, features))


class Block(nn.Module):
  """Pre-LayerNorm transformer block: attention and a GELU MLP.

  Attributes:
    num_heads: attention heads.
    d_ff: hidden width of the MLP.
  """

  num_heads: int
  d_ff: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the block to ``x`` ``[batch, length, embed]``."""
    d_model = x.shape[-1]
    ln = lambda name: nn.LayerNorm(
      scale_init=_init(nn.initializers.ones, ("embed",)),
      bias_init=_init(nn.initializers.zeros, ("embed",)),
      name=name,
    )
    x = x + CausalSelfAttention(
      self.num_heads, d_model // self.num_heads, name="attention"
    )(ln("ln_attention")(x))
    init = nn.initializers.normal(0.02)
    h = nn.Dense(
      self.d_ff,
      kernel_init=_init(init, ("embed", "mlp")),
      bias_init=_init(nn.initializers.zeros, ("mlp",)),
      name="mlp_in",
    )(ln("ln_mlp")(x))
    h = nn.gelu(h)
    h = nn.Dense(
      d_model,
      kernel_init=_init(init, ("mlp", "embed")),
      bias_init=_init(nn.initializers.zeros, ("embed",)),
      name="mlp_out",
    )(h)
    x = x + h
    return nn.with_logical_constraint(x, ("batch", "act_length", "act_embed"))


class TransformerLM(nn.Module):
  """Decoder-only byte-level language model with tied input/output embeddings.

  Attributes:
    vocab_size: number of token ids (256 for bytes).
    d_model: model width.
    num_layers: transformer blocks.
    num_heads: attention heads per block.
    d_ff: hidden width of the MLPs.
    max_len: longest sequence (size of the learned position embedding).
  """

  vocab_size: int = 256
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  d_ff: int = 512
  max_len: int = 256

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Next-token logits.

    Args:
      tokens: int32 ``[batch, length]`` with ``length <= max_len``.

    Returns:
      float32 logits ``[batch, length, vocab_size]``.
    """
    if tokens.shape[-1] > self.max_len:
      raise ValueError(
        f"Sequences of length {tokens.shape[-1]} exceed `max_len` ({self.max_len})."
      )
    embed = nn.Embed(
      self.vocab_size,
      self.d_model,
      embedding_init=_init(nn.initializers.normal(0.02), ("vocab", "embed")),
      name="embed",
    )
    positions = self.param(
      "positions",
      _init(nn.initializers.normal(0.02), ("length", "embed")),
      (self.max_len, self.d_model),
    )
    x = embed(tokens) + positions[None, : tokens.shape[-1]]
    x = nn.with_logical_constraint(x, ("batch", "act_length", "act_embed"))
    for i in range(self.num_layers):
      x = Block(self.num_heads, self.d_ff, name=f"block_{i}")(x)
    x = nn.LayerNorm(
      scale_init=_init(nn.initializers.ones, ("embed",)),
      bias_init=_init(nn.initializers.zeros, ("embed",)),
      name="ln_final",
    )(x)
    return embed.attend(x).astype(jnp.float32)


# Initialisation on the mesh.


def init_fn(model: TransformerLM) -> Callable[[jax.Array], Params]:
  """``rng -> boxed params`` of ``model`` (with their logical axes)."""
  tokens = jnp.zeros((1, model.max_len), jnp.int32)
  return lambda rng: model.init(rng, tokens)["params"]


def params_layout(
  model: TransformerLM, mesh: jax.sharding.Mesh
) -> tuple[Params, Params]:
  """The params' shardings and abstract values, without initialising them.

  Args:
    model: the language model.
    mesh: the device mesh.

  Returns:
    ``(shardings, abstract_params)``: trees of ``NamedSharding`` and of
    ``jax.ShapeDtypeStruct``.
  """
  boxed = jax.eval_shape(init_fn(model), jax.random.key(0))
  shardings = sharding.param_shardings(boxed, mesh, LOGICAL_AXIS_RULES)
  return shardings, nn.meta.unbox(boxed)


def init_params(
  model: TransformerLM, mesh: jax.sharding.Mesh, seed: int
) -> tuple[Params, Params]:
  """Initialises the params directly on their shardings.

  Args:
    model: the language model.
    mesh: the device mesh.
    seed: the initialisation seed.

  Returns:
    ``(params, shardings)``; no device ever holds the unsharded params.
  """
  shardings, _ = params_layout(model, mesh)
  init = init_fn(model)
  params = jax.jit(lambda rng: nn.meta.unbox(init(rng)), out_shardings=shardings)(
    jax.random.key(seed)
  )
  return params, shardings
