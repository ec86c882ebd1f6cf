"""A transformer denoiser F(c_in x; c_noise) over the positions of token windows.

Input x_BLV: per position the (noisy, preconditioned) one-hot vector of V symbols
(data/tokens.py); output F with x's shape. Bidirectional self-attention over the L
positions; the noise level enters every block by adaptive layer norm (DiT's adaLN-Zero):

  emb      = silu(W1 silu(W0 embed(c_noise)))                  (embed: as in the MLP / DDPM++)
  h_0      = W_in x + pos                                       (pos: sinusoidal or learned)
  per block, (shift_i, scale_i, gate_i)_{i=1,2} = W_mod emb    (W_mod zero-initialised)
    h <- h + gate_1 * Attn(LN(h) (1 + scale_1) + shift_1)
    h <- h + gate_2 * MLP(LN(h) (1 + scale_2) + shift_2)        (GELU, width mlp_ratio * width)
  F        = W_out (LN(h) (1 + scale) + shift)                  (W_out gain zero_init_scale)

so every block is the identity and F ~ 0 at initialisation. Parameters are float32; `dtype`
is the compute dtype (bf16 on GPU); layer-norm statistics and the attention softmax run in
float32. Nothing depends on the batch axis, so the step shards over `data` like the others.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from infonoise_jax.models import unet_layers as L

Array = jax.Array
POS_EMBEDDINGS = ("sinusoidal", "learned")


def sinusoidal_positions(length: int, width: int) -> np.ndarray:
  """(L, width) float32: [sin(p f_j), cos(p f_j)], f_j = 10000^(-j / (width/2))."""
  half = width // 2
  freqs_F = 10000.0 ** (-np.arange(half) / half)
  arg_LF = np.arange(length)[:, None] * freqs_F[None, :]
  pos = np.concatenate([np.sin(arg_LF), np.cos(arg_LF)], axis=-1)
  return np.pad(pos, ((0, 0), (0, width - 2 * half))).astype(np.float32)


def _norm(dtype: Any, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(use_scale=False, use_bias=False, dtype=dtype, name=name)


def _modulate(x_BLD: Array, shift_BD: Array, scale_BD: Array) -> Array:
  return x_BLD * (1.0 + scale_BD[:, None, :]) + shift_BD[:, None, :]


class SelfAttention(nn.Module):
  """Multi-head bidirectional self-attention; logits and softmax in float32."""

  width: int
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BLD: Array) -> Array:
    b, length, _ = x_BLD.shape
    head = self.width // self.num_heads
    qkv = L.dense(3 * self.width, self.dtype, "qkv")(x_BLD)
    q_BLHK, k_BLHK, v_BLHK = jnp.split(qkv.reshape(b, length, 3, self.num_heads, head), 3, axis=2)
    q_BLHK, k_BLHK, v_BLHK = (t[:, :, 0] for t in (q_BLHK, k_BLHK, v_BLHK))
    logits_BHLL = jnp.einsum("bqhk,bshk->bhqs", q_BLHK, k_BLHK, preferred_element_type=jnp.float32)
    p_BHLL = jax.nn.softmax(logits_BHLL / np.sqrt(head), axis=-1).astype(self.dtype)
    out_BLHK = jnp.einsum("bhqs,bshk->bqhk", p_BHLL, v_BLHK)
    return L.dense(self.width, self.dtype, "proj")(out_BLHK.reshape(b, length, self.width))


class Block(nn.Module):
  """One adaLN-Zero transformer block."""

  width: int
  num_heads: int
  mlp_ratio: int
  dropout: float
  dtype: Any

  @nn.compact
  def __call__(self, h_BLD: Array, emb_BE: Array, train: bool) -> Array:
    dt = self.dtype
    mod = nn.Dense(6 * self.width, dtype=dt, param_dtype=jnp.float32, name="modulation",
                   kernel_init=nn.initializers.zeros_init())(nn.silu(emb_BE))  # fmt: skip
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
    u = _modulate(_norm(dt, "norm1")(h_BLD), shift1, scale1)
    u = SelfAttention(self.width, self.num_heads, dt, name="attn")(u)
    h_BLD = h_BLD + gate1[:, None, :] * u
    u = _modulate(_norm(dt, "norm2")(h_BLD), shift2, scale2)
    u = nn.gelu(L.dense(self.mlp_ratio * self.width, dt, "fc0")(u))
    if self.dropout > 0:
      u = nn.Dropout(self.dropout, deterministic=not train)(u)
    u = L.dense(self.width, dt, "fc1")(u)
    return h_BLD + gate2[:, None, :] * u


class SequenceTransformer(nn.Module):
  """`apply(v, x_BLV, c_noise_B, train)` -> F of shape (B, L, V), float32."""

  width: int = 256
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: int = 4
  pos_embedding: str = "sinusoidal"
  dropout: float = 0.0
  emb_dim: int = 256
  zero_init_scale: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, c_noise_B: Array, train: bool = False) -> Array:
    dt = self.dtype
    if x.ndim != 3:
      raise ValueError(f"SequenceTransformer needs (B, L, V) inputs, got shape {x.shape}")
    _, length, vocab = x.shape
    emb = L.positional_embedding(jnp.reshape(c_noise_B, (-1,)), self.emb_dim)
    emb = nn.silu(L.dense(self.emb_dim, dt, "map_layer0")(emb))
    emb_BE = nn.silu(L.dense(self.emb_dim, dt, "map_layer1")(emb))
    h = L.dense(self.width, dt, "in")(x.astype(dt))
    if self.pos_embedding == "learned":
      pos = self.param("pos", nn.initializers.normal(0.02), (length, self.width), jnp.float32)
    else:
      pos = jnp.asarray(sinusoidal_positions(length, self.width))
    h = h + pos.astype(dt)[None]
    for i in range(self.depth):
      h = Block(self.width, self.num_heads, self.mlp_ratio, self.dropout, dt, name=f"block{i}")(
        h, emb_BE, train
      )
    mod = nn.Dense(2 * self.width, dtype=dt, param_dtype=jnp.float32, name="out_modulation",
                   kernel_init=nn.initializers.zeros_init())(emb_BE)  # fmt: skip
    shift, scale = jnp.split(mod, 2, axis=-1)
    h = _modulate(_norm(dt, "out_norm")(h), shift, scale)
    f = nn.Dense(vocab, dtype=dt, param_dtype=jnp.float32, name="out",
                 kernel_init=L.xavier_init(self.zero_init_scale))(h)  # fmt: skip
    return f.astype(jnp.float32)
