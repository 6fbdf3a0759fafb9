"""Backbones for 32x32 CIFAR images and the 100-way classification head.

Copied in part from ``examples/cifar/models.py`` (the examples are
standalone). A model is a *backbone* (images -> features) plus one linear
*head* over all 100 CIFAR-100 classes, kept as separate Flax modules so that
head-only fine-tuning and L2-SP (a penalty on the backbone only) can address
them by name.

Normalization is GroupNorm: no module carries mutable state, so the model's
whole state is its parameters. PROFIT restores the parameters after its
reference steps; BatchNorm running statistics updated by the reference batches
could not be restored (and ``optax_profit.make_train_step``'s
``loss_fn(params, batch)`` has no slot for them).
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

MODELS = ("cnn", "resnet18", "resnet34")

# Per-channel statistics of the CIFAR-100 training set (0..1 pixel scale).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def normalize_images(images: jax.Array) -> jax.Array:
  """Maps uint8 images ``[..., 32, 32, 3]`` to normalized float32.

  Args:
    images: uint8 (or float in 0..255) images, channels last.

  Returns:
    ``(images / 255 - CIFAR100_MEAN) / CIFAR100_STD`` in float32.
  """
  x = jnp.asarray(images, jnp.float32) / 255.0
  return (x - jnp.asarray(CIFAR100_MEAN)) / jnp.asarray(CIFAR100_STD)


def _group_norm(channels: int) -> nn.GroupNorm:
  """GroupNorm with 32 groups (fewer for narrow layers)."""
  groups = 32
  while channels % groups:
    groups //= 2
  return nn.GroupNorm(num_groups=groups)


def conv3x3_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A 3x3, stride-1, "SAME" convolution as one matrix product.

  On XLA:CPU (jax 0.10) the gradient of a native convolution runs many times
  slower inside a ``lax.scan`` body (as in ``optax_profit.make_train_step``)
  than outside it; the im2col form does not.

  Args:
    x: ``[batch, height, width, c_in]``.
    kernel: ``[3, 3, c_in, c_out]`` (HWIO, like ``flax.linen.Conv``).

  Returns:
    ``[batch, height, width, c_out]``, what
    ``lax.conv_general_dilated(x, kernel, 1, "SAME")`` computes.
  """
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  columns = jnp.concatenate(
    [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], -1
  )
  return columns @ kernel.reshape(-1, kernel.shape[-1])


class SmallCNN(nn.Module):
  """A small, fast CNN for CPU runs.

  Three stages of one 3x3 convolution (im2col) + GroupNorm + ReLU + 2x2
  max-pool (``width``, ``2 * width``, ``4 * width`` channels), global average
  pooling and a ReLU dense layer of ``8 * width`` features.

  Attributes:
    width: channels of the first stage.
  """

  width: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Features ``[batch, 8 * width]`` of normalized images."""
    for multiplier in (1, 2, 4):
      channels = self.width * multiplier
      kernel = self.param(
        f"conv{multiplier}",
        nn.initializers.lecun_normal(),
        (3, 3, x.shape[-1], channels),
      )
      x = conv3x3_im2col(x, kernel)
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
  """CIFAR ResNet (He et al., 2016): 3x3 stride-1 stem, no max-pool.

  Four stages of :class:`BasicBlock` (64, 128, 256, 512 channels; strides 1,
  2, 2, 2), global average pooling; features: ``8 * width``.

  Attributes:
    stage_sizes: blocks per stage, ``(2, 2, 2, 2)`` for ResNet-18 and
      ``(3, 4, 6, 3)`` for ResNet-34.
    width: channels of the stem and first stage.
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Features ``[batch, 8 * width]`` of normalized images."""
    x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False, name="stem")(x)
    x = nn.relu(_group_norm(self.width)(x))
    for stage, blocks in enumerate(self.stage_sizes):
      for block in range(blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.width * 2**stage, strides=strides)(x)
    return jnp.mean(x, axis=(1, 2))


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


def create_backbone(model: str, *, cnn_width: int = 32) -> nn.Module:
  """The backbone named ``model``.

  Args:
    model: one of :data:`MODELS`.
    cnn_width: first-stage channels of the small CNN.

  Returns:
    An unbound Flax module mapping normalized images ``[batch, 32, 32, 3]`` to
    features ``[batch, features]``.

  Raises:
    ValueError: naming ``model`` if it is unknown.
  """
  factories: dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: SmallCNN(width=cnn_width),
    "resnet18": lambda: ResNet((2, 2, 2, 2)),
    "resnet34": lambda: ResNet((3, 4, 6, 3)),
  }
  if model not in factories:
    raise ValueError(f"`model` must be one of {MODELS}, got {model!r}.")
  return factories[model]()
