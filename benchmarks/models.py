"""Models of the whole-train-step benchmark and their losses.

* ``cnn``: the CIFAR example's small CNN (``examples.cifar.models``, width 32,
  im2col convolutions) with a 10-class head, batch 128 of 32x32x3 images;
* ``resnet18``: the CIFAR example's ResNet-18 (native convolutions), batch 128
  (GPU only: on XLA:CPU a native convolution's gradient inside a loop body,
  as in any scanned train step, runs tens of times slower, see README);
* ``transformer``: a small decoder-only language model defined here (pre-LN
  blocks, causal attention), next-token cross-entropy.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.cifar import models


class _Block(nn.Module):
  """Pre-LN decoder block: causal self-attention and a GELU MLP."""

  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))
    y = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, y, mask=mask)
    y = nn.Dense(self.mlp_dim)(nn.LayerNorm()(x))
    return x + nn.Dense(x.shape[-1])(nn.gelu(y))


class TransformerLM(nn.Module):
  """A small decoder-only language model.

  Attributes:
    vocab: vocabulary size.
    dim: model width.
    depth: blocks.
    num_heads: attention heads.
    seq_len: maximum sequence length (learned positions).
  """

  vocab: int = 2048
  dim: int = 256
  depth: int = 4
  num_heads: int = 4
  seq_len: int = 128

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Logits ``[batch, length, vocab]`` of int tokens ``[batch, length]``."""
    x = nn.Embed(self.vocab, self.dim)(tokens)
    pos = self.param("pos", nn.initializers.normal(0.02), (self.seq_len, self.dim))
    x = x + pos[: tokens.shape[1]]
    for _ in range(self.depth):
      x = _Block(self.num_heads, 4 * self.dim)(x)
    return nn.Dense(self.vocab)(nn.LayerNorm()(x))


@dataclasses.dataclass
class Workload:
  """A model, its params, a loss and a batch maker.

  Attributes:
    name: label in the tables.
    params: initial params.
    loss_fn: ``loss_fn(params, batch) -> scalar``.
    make_batch: ``make_batch(i) -> batch`` (NumPy arrays, deterministic).
  """

  name: str
  params: Any
  loss_fn: Callable[[Any, Any], jax.Array]
  make_batch: Callable[[int], Any]


def _classifier(backbone: nn.Module, name: str, batch_size: int) -> Workload:
  head = nn.Dense(10)
  images = jnp.zeros((batch_size, 32, 32, 3), jnp.float32)
  key = jax.random.PRNGKey(0)
  b_params = backbone.init(key, images)["params"]
  feats = backbone.apply({"params": b_params}, images)
  h_params = head.init(key, feats)["params"]
  params = {"backbone": b_params, "head": h_params}

  def loss_fn(params, batch):
    feats = backbone.apply({"params": params["backbone"]}, batch["image"])
    logits = head.apply({"params": params["head"]}, feats)
    return optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["label"]
    ).mean()

  def make_batch(i):
    rng = np.random.default_rng(i)
    return {
      "image": rng.standard_normal((batch_size, 32, 32, 3)).astype(np.float32),
      "label": rng.integers(0, 10, batch_size).astype(np.int32),
    }

  return Workload(name, params, loss_fn, make_batch)


def cnn(batch_size: int = 128) -> Workload:
  """The CIFAR example's small CNN."""
  return _classifier(models.create_backbone("cnn", cnn_width=32), "cnn", batch_size)


def resnet18(
  batch_size: int = 128, *, stage_sizes: tuple[int, ...] = (2, 2, 2, 2), width: int = 64
) -> Workload:
  """The CIFAR example's ResNet-18 (smaller with other ``stage_sizes``/``width``)."""
  backbone = models.ResNet(stage_sizes=stage_sizes, width=width)
  return _classifier(backbone, "resnet18", batch_size)


def transformer(
  batch_size: int = 8, *, dim: int = 256, depth: int = 4, seq_len: int = 64
) -> Workload:
  """The small decoder-only language model, next-token cross-entropy."""
  model = TransformerLM(
    dim=dim, depth=depth, num_heads=max(4, dim // 64), seq_len=seq_len
  )
  tokens = jnp.zeros((batch_size, seq_len), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), tokens)["params"]

  def loss_fn(params, batch):
    tokens = batch["tokens"]
    logits = model.apply({"params": params}, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  def make_batch(i):
    rng = np.random.default_rng(i)
    return {
      "tokens": rng.integers(0, model.vocab, (batch_size, seq_len + 1)).astype(np.int32)
    }

  name = f"transformer d{dim} x{depth}"
  return Workload(name, params, loss_fn, make_batch)


def param_count(params: Any) -> int:
  """Number of parameters."""
  return sum(x.size for x in jax.tree.leaves(params))
