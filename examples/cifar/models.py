"""Backbones for 32x32 CIFAR images and the classification head.

The models of both CIFAR examples (``cifar`` and ``cifar_lt``). A model is a
*backbone* (images -> feature vector) plus one linear *head* per task: here
the CIFAR-10 head from pre-training and a new CIFAR-100 head for fine-tuning
(``cifar_lt``: one 100-way head). They are separate Flax modules so that the training code can give
the optimizer exactly the trainable parts (backbone + CIFAR-100 head) and keep
the CIFAR-10 head out of it.

Normalization is GroupNorm (ResNet-18, small CNN) or LayerNorm (ViTs): no
module carries mutable state, so the model's whole state is its parameters.
This matters for PROFIT, which restores the parameters to ``theta_ref`` after
its reference steps: BatchNorm running statistics would be updated by the
reference-step batches and could not be restored (and
``optax_profit.make_train_step``'s ``loss_fn(params, batch)`` has no slot for
them). The CIFAR ResNet-18 has the same parameter count with either norm
(scale and bias per channel).

``cifar_lt`` normalizes with the CIFAR-100 statistics and lays out its small
CNN's kernels as the CNN's own parameters (``SmallCNN(flat=True)``), which
keeps its initialization and checkpoints.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = Any
MODELS = ("cnn", "resnet18", "resnet34", "vit_tiny", "vit_small")

# Per-channel statistics of the CIFAR-10 training set (0..1 pixel scale).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# Per-channel statistics of the CIFAR-100 training set (``cifar_lt``).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def normalize_images(
  images: jax.Array,
  mean: Sequence[float] = CIFAR_MEAN,
  std: Sequence[float] = CIFAR_STD,
) -> jax.Array:
  """Maps uint8 images ``[..., 32, 32, 3]`` to normalized float32.

  Args:
    images: uint8 (or float in 0..255) images, channels last.
    mean: per-channel mean on the 0..1 scale (default: CIFAR-10's).
    std: per-channel standard deviation on the 0..1 scale.

  Returns:
    ``(images / 255 - mean) / std`` in float32.
  """
  x = jnp.asarray(images, jnp.float32) / 255.0
  return (x - jnp.asarray(mean)) / jnp.asarray(std)


def _group_norm(channels: int) -> nn.GroupNorm:
  """GroupNorm with 32 groups (fewer for narrow layers)."""
  groups = 32
  while channels % groups:
    groups //= 2
  return nn.GroupNorm(num_groups=groups)


def conv3x3_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A 3x3, stride-1, zero-padded ("SAME") convolution as one matrix product.

  The nine shifted copies of the padded input are concatenated along the
  channels and multiplied by the kernel reshaped to ``[9 * c_in, c_out]``.
  It computes what ``lax.conv_general_dilated(x, kernel, 1, "SAME")`` does.
  On XLA:CPU (jax 0.10) the gradient of a native convolution runs about 30x
  slower inside a ``lax.scan`` body (as in ``optax_profit.make_train_step``)
  than outside it; this formulation does not.

  Args:
    x: ``[batch, height, width, c_in]``.
    kernel: ``[3, 3, c_in, c_out]`` (HWIO, like ``flax.linen.Conv``).

  Returns:
    ``[batch, height, width, c_out]``.
  """
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  columns = jnp.concatenate(
    [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], -1
  )
  return columns @ kernel.reshape(-1, kernel.shape[-1])


class Conv3x3(nn.Module):
  """3x3 "SAME" convolution without bias, native or as im2col.

  Attributes:
    features: output channels.
    im2col: compute with :func:`conv3x3_im2col` (fast on CPU inside
      ``lax.scan``) instead of ``lax.conv_general_dilated``. Same parameters
      and same result either way.
  """

  features: int
  im2col: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution to ``[batch, height, width, c_in]``."""
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features)
    )
    if self.im2col:
      return conv3x3_im2col(x, kernel)
    return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


class SmallCNN(nn.Module):
  """A small, fast CNN for CPU runs.

  Three stages of one 3x3 convolution + GroupNorm + ReLU + 2x2 max-pool
  (``width``, ``2 * width``, ``4 * width`` channels), global average pooling and
  a ReLU dense layer of ``8 * width`` features. The convolutions are computed
  as im2col matrix products (see :func:`conv3x3_im2col`).

  Attributes:
    width: channels of the first stage.
    im2col: see :class:`Conv3x3`.
    flat: ``cifar_lt``'s layout: the kernels are the CNN's own params
      ``conv1``, ``conv2``, ``conv4`` (im2col) instead of ``Conv3x3_<i>``
      submodules; the same function, initialized from other random streams.
  """

  width: int = 32
  im2col: bool = True
  flat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Features ``[batch, 8 * width]`` of normalized images ``[batch, 32, 32, 3]``."""
    for multiplier in (1, 2, 4):
      channels = self.width * multiplier
      if self.flat:
        kernel = self.param(
          f"conv{multiplier}",
          nn.initializers.lecun_normal(),
          (3, 3, x.shape[-1], channels),
        )
        x = conv3x3_im2col(x, kernel)
      else:
        x = Conv3x3(channels, im2col=self.im2col)(x)
      x = nn.relu(_group_norm(channels)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    return nn.relu(nn.Dense(8 * self.width)(x))


class BasicBlock(nn.Module):
  """The two-convolution residual block of ResNet-18/34.

  Attributes:
    features: output channels.
    strides: stride of the first convolution (and of the projection shortcut).
  """

  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the block."""
    residual = x
    y = nn.Conv(self.features, (3, 3), strides=self.strides, padding=1, use_bias=False)(
      x
    )
    y = nn.relu(_group_norm(self.features)(y))
    y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(y)
    y = _group_norm(self.features)(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      residual = nn.Conv(
        self.features,
        (1, 1),
        strides=self.strides,
        use_bias=False,
        name="shortcut_conv",
      )(x)
      residual = _group_norm(self.features)(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ResNet-18/34 for 32x32 inputs (He et al., 2016; the usual CIFAR variant).

  3x3 stride-1 stem with 64 channels and no max-pool, four stages of
  :class:`BasicBlock` (64, 128, 256, 512 channels; strides 1, 2, 2, 2), global
  average pooling. Features: 512.

  Attributes:
    stage_sizes: blocks per stage, ``(2, 2, 2, 2)`` for ResNet-18 and
      ``(3, 4, 6, 3)`` for ResNet-34.
    width: channels of the stem and first stage.
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Features ``[batch, 8 * width]`` of normalized images ``[batch, 32, 32, 3]``."""
    x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False, name="stem")(x)
    x = nn.relu(_group_norm(self.width)(x))
    for stage, blocks in enumerate(self.stage_sizes):
      for block in range(blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.width * 2**stage, strides=strides)(x)
    return jnp.mean(x, axis=(1, 2))


class EncoderBlock(nn.Module):
  """Pre-LayerNorm transformer block: self-attention then a GELU MLP.

  Attributes:
    num_heads: attention heads.
    mlp_dim: hidden width of the MLP.
  """

  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the block to tokens ``[batch, tokens, dim]``."""
    y = nn.LayerNorm()(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, y)
    x = x + y
    y = nn.LayerNorm()(x)
    y = nn.Dense(self.mlp_dim)(y)
    y = nn.gelu(y)
    y = nn.Dense(x.shape[-1])(y)
    return x + y


class ViT(nn.Module):
  """Vision Transformer (Dosovitskiy et al., 2021) for 32x32 images.

  Patch embedding with ``patch_size`` (4: 64 tokens), a class token, learned
  position embeddings, ``depth`` pre-LN encoder blocks and a final LayerNorm;
  the features are the class token's output.

  Attributes:
    dim: token width.
    depth: encoder blocks.
    num_heads: attention heads.
    mlp_dim: MLP hidden width.
    patch_size: patch side in pixels.
  """

  dim: int = 192
  depth: int = 12
  num_heads: int = 3
  mlp_dim: int = 768
  patch_size: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Features ``[batch, dim]`` of normalized images ``[batch, 32, 32, 3]``."""
    p = self.patch_size
    x = nn.Conv(
      self.dim, (p, p), strides=(p, p), padding="VALID", name="patch_embedding"
    )(x)
    batch = x.shape[0]
    x = x.reshape(batch, -1, self.dim)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
    x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.dim)), x], 1)
    pos = self.param(
      "pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], self.dim)
    )
    x = x + pos
    for _ in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim)(x)
    return nn.LayerNorm(name="encoder_norm")(x[:, 0])


def vit_tiny() -> ViT:
  """ViT-Tiny/4: width 192, depth 12, 3 heads, MLP 768."""
  return ViT(dim=192, depth=12, num_heads=3, mlp_dim=768, patch_size=4)


def vit_small() -> ViT:
  """ViT-Small/4: width 384, depth 12, 6 heads, MLP 1536."""
  return ViT(dim=384, depth=12, num_heads=6, mlp_dim=1536, patch_size=4)


class Head(nn.Module):
  """A linear classification head on the backbone's features.

  Attributes:
    num_classes: number of classes.
  """

  num_classes: int

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    """Logits ``[batch, num_classes]``."""
    return nn.Dense(self.num_classes)(features)


def create_backbone(
  model: str, *, cnn_width: int = 32, cnn_flat: bool = False
) -> nn.Module:
  """The backbone named ``model``.

  Args:
    model: one of :data:`MODELS`: ``"cnn"``, ``"resnet18"``, ``"resnet34"``,
      ``"vit_tiny"``, ``"vit_small"``.
    cnn_width: first-stage channels of the small CNN.
    cnn_flat: the small CNN's ``flat`` layout (``cifar_lt``).

  Returns:
    An unbound Flax module mapping normalized images ``[batch, 32, 32, 3]`` to
    features ``[batch, features]``.

  Raises:
    ValueError: for an unknown ``model``.
  """
  factories: dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: SmallCNN(width=cnn_width, flat=cnn_flat),
    "resnet18": lambda: ResNet((2, 2, 2, 2)),
    "resnet34": lambda: ResNet((3, 4, 6, 3)),
    "vit_tiny": vit_tiny,
    "vit_small": vit_small,
  }
  if model not in factories:
    raise ValueError(f"`model` must be one of {MODELS}, got {model!r}.")
  return factories[model]()


# ----------------------------------------------------------------------------
# A model's functions: backbone, initialization, logits.


def backbone(config: Any) -> nn.Module:
  """The backbone of a config with ``model`` and ``cnn_width`` fields."""
  return create_backbone(config.model, cnn_width=config.cnn_width)


# The model's jitted functions are keyed on the backbone module itself (a
# frozen dataclass holding every setting that defines it), never on a list of
# config fields.
@functools.lru_cache(maxsize=16)
def _initializers(backbone: nn.Module, num_classes: int):
  """Jitted ``key -> params`` of the backbone and of a head (cached)."""
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
  """Fresh ``{"backbone": ..., "head": ...}`` params for ``num_classes``.

  Args:
    config: supplies the model.
    num_classes: the head's classes.
    key: the PRNG key.

  Returns:
    The params.
  """
  init_backbone, init_head = _initializers(backbone(config), num_classes)
  key_backbone, key_head = jax.random.split(key)
  return {"backbone": init_backbone(key_backbone), "head": init_head(key_head)}


def init_head(config: Any, num_classes: int, key: jax.Array) -> Params:
  """Fresh head params (as ``init_params(config, num_classes, key)["head"]``)."""
  _, init = _initializers(backbone(config), num_classes)
  return init(jax.random.split(key)[1])


def logits_fn(backbone: nn.Module, params: Params, images: jax.Array) -> jax.Array:
  """Logits of uint8 ``images`` under ``{"backbone", "head"}`` params.

  Args:
    backbone: the backbone module.
    params: ``{"backbone": ..., "head": ...}``.
    images: uint8 ``[batch, 32, 32, 3]``.

  Returns:
    Logits ``[batch, num_classes]``.
  """
  features = backbone.apply({"params": params["backbone"]}, normalize_images(images))
  num_classes = params["head"]["Dense_0"]["kernel"].shape[-1]
  return Head(num_classes).apply({"params": params["head"]}, features)
