"""Backbones for 32x32 CIFAR images and the linear head (shared with ``cifar_lt``).

GroupNorm or LayerNorm, never BatchNorm: PROFIT restores the parameters to
``theta_ref``, and running statistics could not be (see the README).
"""

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = Any
MODELS = ("cnn", "resnet18", "resnet34", "vit_tiny", "vit_small")

# Per-channel statistics (0..1 pixel scale) of the CIFAR-10 and CIFAR-100
# training sets (``cifar_lt`` uses CIFAR-100's).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def normalize_images(images: jax.Array, mean=CIFAR_MEAN, std=CIFAR_STD) -> jax.Array:
  """``(images / 255 - mean) / std`` in float32 for uint8 ``[..., 32, 32, 3]``."""
  x = jnp.asarray(images, jnp.float32) / 255.0
  return (x - jnp.asarray(mean)) / jnp.asarray(std)


def _group_norm(channels: int) -> nn.GroupNorm:
  """GroupNorm with 32 groups (fewer for narrow layers)."""
  return nn.GroupNorm(num_groups=math.gcd(channels, 32))


def conv3x3_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A 3x3 "SAME" NHWC/HWIO convolution as one matrix product of shifted copies.

  On XLA:CPU the gradient of a native convolution is ~30x slower in a scan.
  """
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  columns = jnp.concatenate(
    [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], -1
  )
  return columns @ kernel.reshape(-1, kernel.shape[-1])


def _kernel(module: nn.Module, name: str, c_in: int, c_out: int) -> jax.Array:
  return module.param(name, nn.initializers.lecun_normal(), (3, 3, c_in, c_out))


class Conv3x3(nn.Module):
  """3x3 "SAME" convolution without bias, computed by :func:`conv3x3_im2col`."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return conv3x3_im2col(x, _kernel(self, "kernel", x.shape[-1], self.features))


class SmallCNN(nn.Module):
  """3 x (3x3 conv, GroupNorm, ReLU, max-pool), mean-pool, ReLU dense of 8 * width.

  ``flat`` (``cifar_lt``'s layout): kernels ``conv1/2/4`` of the CNN itself.
  """

  width: int = 32
  flat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for multiplier in (1, 2, 4):
      channels = self.width * multiplier
      if self.flat:
        x = conv3x3_im2col(x, _kernel(self, f"conv{multiplier}", x.shape[-1], channels))
      else:
        x = Conv3x3(channels)(x)
      x = nn.relu(_group_norm(channels)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    return nn.relu(nn.Dense(8 * self.width)(x))


class BasicBlock(nn.Module):
  """The two-convolution residual block of ResNet-18/34."""

  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(nn.Conv, self.features, use_bias=False)
    y = conv((3, 3), strides=self.strides, padding=1)(x)
    y = nn.relu(_group_norm(self.features)(y))
    y = _group_norm(self.features)(conv((3, 3), padding=1)(y))
    residual = x
    if self.strides != 1 or x.shape[-1] != self.features:
      residual = conv((1, 1), strides=self.strides, name="shortcut_conv")(x)
      residual = _group_norm(self.features)(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """The CIFAR ResNet-18 (``stage_sizes`` (3, 4, 6, 3): 34): 3x3 stem, no max-pool."""

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False, name="stem")(x)
    x = nn.relu(_group_norm(self.width)(x))
    for stage, blocks in enumerate(self.stage_sizes):
      for block in range(blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.width * 2**stage, strides=strides)(x)
    return jnp.mean(x, axis=(1, 2))


class EncoderBlock(nn.Module):
  """Pre-LayerNorm transformer block: self-attention then a GELU MLP."""

  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, y)
    y = nn.gelu(nn.Dense(self.mlp_dim)(nn.LayerNorm()(x)))
    return x + nn.Dense(x.shape[-1])(y)


class ViT(nn.Module):
  """ViT for 32x32 images: the class token's output (defaults: ViT-Tiny/4)."""

  dim: int = 192
  depth: int = 12
  num_heads: int = 3
  mlp_dim: int = 768
  patch_size: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.patch_size
    x = nn.Conv(
      self.dim, (p, p), strides=(p, p), padding="VALID", name="patch_embedding"
    )(x)
    batch = x.shape[0]
    x = x.reshape(batch, -1, self.dim)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
    x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.dim)), x], 1)
    x = x + self.param(
      "pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], self.dim)
    )
    for _ in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim)(x)
    return nn.LayerNorm(name="encoder_norm")(x[:, 0])


class Head(nn.Module):
  """A linear classification head on the backbone's features."""

  num_classes: int

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    return nn.Dense(self.num_classes)(features)


def create_backbone(model: str, *, cnn_width=32, cnn_flat=False) -> nn.Module:
  """The backbone ``model`` of :data:`MODELS`: normalized images -> features."""
  factories = {
    "cnn": lambda: SmallCNN(width=cnn_width, flat=cnn_flat),
    "resnet18": lambda: ResNet((2, 2, 2, 2)),
    "resnet34": lambda: ResNet((3, 4, 6, 3)),
    "vit_tiny": lambda: ViT(dim=192, depth=12, num_heads=3, mlp_dim=768),
    "vit_small": lambda: ViT(dim=384, depth=12, num_heads=6, mlp_dim=1536),
  }
  if model not in factories:
    raise ValueError(f"`model` must be one of {MODELS}, got {model!r}.")
  return factories[model]()


def backbone(config: Any) -> nn.Module:
  """The backbone of a config with ``model`` and ``cnn_width`` fields."""
  return create_backbone(config.model, cnn_width=config.cnn_width)


@functools.lru_cache(maxsize=16)
def _initializers(backbone: nn.Module, num_classes: int):
  """Jitted ``key -> params`` of the backbone and a head (keyed on the module)."""
  images = jnp.zeros((1, 32, 32, 3), jnp.float32)
  init_backbone = jax.jit(lambda key: backbone.init(key, images)["params"])
  features = jax.eval_shape(
    lambda key: backbone.apply({"params": init_backbone(key)}, images),
    jax.random.key(0),
  )
  head = Head(num_classes)
  init_head = jax.jit(
    lambda key: head.init(key, jnp.zeros(features.shape, features.dtype))["params"]
  )
  return init_backbone, init_head


def init_params(config: Any, num_classes: int, key: jax.Array) -> Params:
  """Fresh ``{"backbone": ..., "head": ...}`` params for ``num_classes``."""
  init_backbone, init_head = _initializers(backbone(config), num_classes)
  key_backbone, key_head = jax.random.split(key)
  return {"backbone": init_backbone(key_backbone), "head": init_head(key_head)}


def init_head(config: Any, num_classes: int, key: jax.Array) -> Params:
  """Fresh head params (as ``init_params(config, num_classes, key)["head"]``)."""
  _, init = _initializers(backbone(config), num_classes)
  return init(jax.random.split(key)[1])


def logits_fn(backbone: nn.Module, params: Params, images: jax.Array) -> jax.Array:
  """Logits of uint8 ``images`` under ``{"backbone", "head"}`` params."""
  features = backbone.apply({"params": params["backbone"]}, normalize_images(images))
  num_classes = params["head"]["Dense_0"]["kernel"].shape[-1]
  return Head(num_classes).apply({"params": params["head"]}, features)
