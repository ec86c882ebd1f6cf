"""A small residual MLP denoiser F(c_in x; c_noise) for vectors and small images.

Input of any per-example shape is flattened to D features and the output reshaped back, so
it serves toy 2-D data, Gaussian mixtures and 8x8 / 14x14 images alike. The noise level
enters as in EDM's mapping network: an embedding of c_noise = ln(sigma)/4 (positional or
random Fourier), two SiLU-activated linear layers, then added into every residual block.

  h_0 = W_in x
  h_i = P_i h_{i-1} + V_i dropout(silu(LN(U_i silu(LN(h_{i-1})) + A_i emb)))   (width d_i)
  F   = W_out silu(LN(h_n)),  W_out initialised with gain `zero_init_scale` (F ~ 0 at init)

P_i is the identity when widths match, else a linear projection. Parameters are float32;
`dtype` is the compute dtype; LayerNorm statistics are reduced in float32.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from infonoise_jax.models import unet_layers as L

Array = jax.Array


def _layer_norm(dtype: Any, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(dtype=dtype, param_dtype=jnp.float32, name=name)


class MLPDenoiser(nn.Module):
  """Residual MLP: `apply(v, x_B..., c_noise_B, train)` -> F with x's shape (float32)."""

  hidden_dims: tuple[int, ...] = (512, 512, 512)
  embedding_type: str = "positional"
  emb_dim: int = 128
  dropout: float = 0.0
  zero_init_scale: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, c_noise_B: Array, train: bool = False) -> Array:
    dt = self.dtype
    x_BD = x.reshape(x.shape[0], -1).astype(dt)
    emb_BE = self._embed(jnp.reshape(c_noise_B, (-1,)))
    h = L.dense(self.hidden_dims[0], dt, "in")(x_BD)
    for i, width in enumerate(self.hidden_dims):
      u = L.dense(width, dt, f"block{i}_fc0")(nn.silu(_layer_norm(dt, f"block{i}_norm0")(h)))
      u = u + L.dense(width, dt, f"block{i}_affine")(emb_BE)
      u = nn.silu(_layer_norm(dt, f"block{i}_norm1")(u))
      if self.dropout > 0:
        u = nn.Dropout(self.dropout, deterministic=not train)(u)
      u = nn.Dense(
        width,
        dtype=dt,
        param_dtype=jnp.float32,
        kernel_init=L.xavier_init(self.zero_init_scale),
        name=f"block{i}_fc1",
      )(u)
      skip = h if h.shape[-1] == width else L.dense(width, dt, f"block{i}_skip")(h)
      h = skip + u
    h = nn.silu(_layer_norm(dt, "out_norm")(h))
    f_BD = nn.Dense(
      x_BD.shape[-1],
      dtype=dt,
      param_dtype=jnp.float32,
      kernel_init=L.xavier_init(self.zero_init_scale),
      name="out",
    )(h)
    return f_BD.reshape(x.shape).astype(jnp.float32)

  def _embed(self, c_noise_B: Array) -> Array:
    if self.embedding_type == "positional":
      emb = L.positional_embedding(c_noise_B, self.emb_dim)
    else:
      emb = L.fourier_embedding(c_noise_B, self.emb_dim)
    emb = nn.silu(L.dense(self.emb_dim, self.dtype, "map_layer0")(emb))
    return nn.silu(L.dense(self.emb_dim, self.dtype, "map_layer1")(emb))
