"""The MLP of the toy example: [2, 500] -> [500, 500] -> [500, 1].

``Dense -> LayerNorm -> ReLU``, twice, then ``Dense`` (paper, Appendix C.1;
the paper does not name the activation, ReLU is PyTorch's default choice).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

#: Only ``HEAD`` (the last Dense) trains in head-only fine-tuning.
HEAD = "head"
LAYERS = ("dense_1", "norm_1", "dense_2", "norm_2", HEAD)


class MLP(nn.Module):
  """Maps points ``[..., 2]`` to scalar predictions ``[...]``."""

  hidden: int = 500

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in (1, 2):
      x = nn.Dense(self.hidden, name=f"dense_{i}")(x)
      x = nn.relu(nn.LayerNorm(name=f"norm_{i}")(x))
    return jnp.squeeze(nn.Dense(1, name=HEAD)(x), axis=-1)


def init_params(model: MLP, rng: jax.Array) -> dict:
  """The variables ``{"params": {layer_name: {...}}}`` of ``model``."""
  return model.init(rng, jnp.zeros((1, 2), jnp.float32))
