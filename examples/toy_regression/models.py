"""The MLP of the toy example: [2, 500] -> [500, 500] -> [500, 1].

LayerNorm follows every Dense layer but the last (paper, Appendix C.1). The
paper does not name the activation; we use ReLU, the default of a PyTorch MLP
(``nn.ReLU``) and the most likely choice of a PyTorch reference code. It is
applied after each LayerNorm: ``Dense -> LayerNorm -> ReLU``.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

#: Names of the layers, in order. Only ``HEAD`` trains in head-only fine-tuning.
DENSE_1 = "dense_1"
NORM_1 = "norm_1"
DENSE_2 = "dense_2"
NORM_2 = "norm_2"
HEAD = "head"
LAYERS = (DENSE_1, NORM_1, DENSE_2, NORM_2, HEAD)


class MLP(nn.Module):
  """A 3-layer MLP with LayerNorm after the two hidden Dense layers.

  Attributes:
    hidden: width of the two hidden layers (500 in the paper).
    activation: the nonlinearity after each LayerNorm.
  """

  hidden: int = 500
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps inputs of shape ``[..., 2]`` to predictions of shape ``[...]``.

    Args:
      x: points of the plane, shape ``[..., 2]``.

    Returns:
      The scalar prediction per point, shape ``x.shape[:-1]``.
    """
    x = nn.Dense(self.hidden, name=DENSE_1)(x)
    x = self.activation(nn.LayerNorm(name=NORM_1)(x))
    x = nn.Dense(self.hidden, name=DENSE_2)(x)
    x = self.activation(nn.LayerNorm(name=NORM_2)(x))
    x = nn.Dense(1, name=HEAD)(x)
    return jnp.squeeze(x, axis=-1)


def init_params(model: MLP, rng: jax.Array) -> dict:
  """Initializes the parameters of ``model``.

  Args:
    model: the MLP.
    rng: a JAX PRNG key.

  Returns:
    The parameter pytree ``{"params": {layer_name: {...}}}``.
  """
  return model.init(rng, jnp.zeros((1, 2), jnp.float32))
