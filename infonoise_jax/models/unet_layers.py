"""Building blocks of EDM's SongUNet (DDPM++ / NCSN++) in Flax linen, NHWC layout.

Written from the description of `training/networks.py` in NVlabs/edm (Karras et al. 2022),
which reimplements the networks of Song et al. 2021: FIR-filtered up/down-sampling
convolutions, GroupNorm with at most 32 groups of at least 4 channels, residual blocks with
an additive noise embedding and skip scale 1/sqrt(2), single-head self-attention computed in
float32, and the two noise embeddings (positional for DDPM++, random Fourier for NCSN++).

Initialisation follows EDM: every weight is Xavier-uniform times a gain (1 by default,
sqrt(0.2) for the attention qkv projection, `zero_init_scale` = 1e-5 for the last layer of
each residual branch and the output layer), every bias starts at zero. Parameters are
float32; `dtype` is the compute dtype (activations and matmuls).
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any

SKIP_SCALE = math.sqrt(0.5)  # residual sums are rescaled by 1/sqrt(2) (EDM block_kwargs)
_DIMS = ("NHWC", "HWIO", "NHWC")


def xavier_init(gain: float) -> nn.initializers.Initializer:
  """Xavier-uniform scaled by `gain`: U(+-gain sqrt(6 / (fan_in + fan_out)))."""
  if gain == 0.0:
    return nn.initializers.zeros_init()
  # variance_scaling(s, fan_avg, uniform) has limit sqrt(3 s / fan_avg) = sqrt(6 s/(fi + fo)).
  return nn.initializers.variance_scaling(gain**2, "fan_avg", "uniform")


def num_groups(channels: int) -> int:
  """GroupNorm groups as in EDM: min(32, channels // 4)."""
  return min(32, channels // 4)


def group_norm(channels: int, dtype: Dtype, name: str) -> nn.GroupNorm:
  """GroupNorm with EDM's SongUNet epsilon 1e-6 (statistics reduced in float32 by flax)."""
  return nn.GroupNorm(
    num_groups=num_groups(channels), epsilon=1e-6, dtype=dtype, param_dtype=jnp.float32, name=name
  )


def _filter_2d(resample_filter: tuple[int, ...]) -> np.ndarray:
  """Separable FIR filter f f^T / (sum f)^2, so that it preserves the mean."""
  f = np.asarray(resample_filter, np.float32)
  return np.outer(f, f) / f.sum() ** 2


def _depthwise(x_BHWC: Array, k_KK: np.ndarray, **conv_kwargs) -> Array:
  c = x_BHWC.shape[-1]
  w = jnp.broadcast_to(jnp.asarray(k_KK, x_BHWC.dtype)[:, :, None, None], k_KK.shape + (1, c))
  return jax.lax.conv_general_dilated(
    x_BHWC, w, dimension_numbers=_DIMS, feature_group_count=c, **conv_kwargs
  )


def downsample(x_BHWC: Array, resample_filter: tuple[int, ...], pad: bool = True) -> Array:
  """Halves H and W: depthwise FIR filter with stride 2, padding (len(f) - 1) // 2 (or none)."""
  if tuple(resample_filter) == (1, 1):  # box filter == 2x2 average pooling
    b, h, w, c = x_BHWC.shape
    return x_BHWC.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
  p = (len(resample_filter) - 1) // 2 if pad else 0
  return _depthwise(
    x_BHWC, _filter_2d(resample_filter), window_strides=(2, 2), padding=[(p, p), (p, p)]
  )


def upsample(x_BHWC: Array, resample_filter: tuple[int, ...]) -> Array:
  """Doubles H and W: stride-2 transposed depthwise conv with the filter times 4."""
  if tuple(resample_filter) == (1, 1):  # box filter == nearest-neighbour upsampling
    return jnp.repeat(jnp.repeat(x_BHWC, 2, axis=1), 2, axis=2)
  k = len(resample_filter)
  # Transposed conv with padding p == dilated-input conv with padding k - 1 - p.
  q = k - 1 - (k - 1) // 2
  return _depthwise(
    x_BHWC,
    4.0 * _filter_2d(resample_filter),
    window_strides=(1, 1),
    padding=[(q, q), (q, q)],
    lhs_dilation=(2, 2),
  )


class Conv2D(nn.Module):
  """k x k convolution ('same' padding) with optional FIR up/down-sampling around it.

  kernel=0 resamples only. Unfused: resample, then convolve. `fused_down` convolves first
  with the padding enlarged by the filter's, then filters with stride 2 (EDM's residual
  encoder path).
  """

  features: int
  kernel: int
  up: bool = False
  down: bool = False
  resample_filter: tuple[int, ...] = (1, 1)
  fused_down: bool = False
  init_gain: float = 1.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: Array) -> Array:
    x = x_BHWC.astype(self.dtype)
    if self.up:
      x = upsample(x, self.resample_filter)
    if self.down and not self.fused_down:
      x = downsample(x, self.resample_filter)
    if not self.kernel:
      return x
    shape = (self.kernel, self.kernel, x.shape[-1], self.features)
    w = self.param("kernel", xavier_init(self.init_gain), shape, jnp.float32)
    b = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    p = self.kernel // 2
    if self.down and self.fused_down:
      p += (len(self.resample_filter) - 1) // 2
    x = jax.lax.conv_general_dilated(
      x, w.astype(self.dtype), (1, 1), [(p, p), (p, p)], dimension_numbers=_DIMS
    )
    if self.down and self.fused_down:
      x = downsample(x, self.resample_filter, pad=False)
    return x + b.astype(self.dtype)


def dense(features: int, dtype: Dtype, name: str, use_bias: bool = True) -> nn.Dense:
  """Fully connected layer with EDM's Xavier-uniform weights and zero bias."""
  return nn.Dense(
    features,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=xavier_init(1.0),
    bias_init=nn.initializers.zeros_init(),
    name=name,
  )


def positional_embedding(c_noise_B: Array, num_channels: int, max_period: float = 1e4) -> Array:
  """DDPM++ embedding [sin(c f_j), cos(c f_j)], f_j = max_period^(-j / (n/2 - 1)) (endpoint)."""
  half = num_channels // 2
  freqs_F = (1.0 / max_period) ** (jnp.arange(half, dtype=jnp.float32) / (half - 1))
  arg_BF = c_noise_B.astype(jnp.float32)[:, None] * freqs_F[None, :]
  # EDM computes [cos, sin] and then swaps the halves: the result is [sin, cos].
  return jnp.concatenate([jnp.sin(arg_BF), jnp.cos(arg_BF)], axis=-1)


def fourier_frequencies(num_channels: int, scale: float = 16.0, seed: int = 0) -> np.ndarray:
  """NCSN++'s fixed random frequencies N(0, scale^2); a constant here, not a parameter."""
  return np.random.default_rng(seed).standard_normal(num_channels // 2).astype(np.float32) * scale


def fourier_embedding(c_noise_B: Array, num_channels: int) -> Array:
  """NCSN++ embedding [sin(2 pi c f_j), cos(2 pi c f_j)] with f_j ~ N(0, 16^2) fixed."""
  freqs_F = jnp.asarray(2.0 * np.pi * fourier_frequencies(num_channels))
  arg_BF = c_noise_B.astype(jnp.float32)[:, None] * freqs_F[None, :]
  return jnp.concatenate([jnp.sin(arg_BF), jnp.cos(arg_BF)], axis=-1)


class UNetBlock(nn.Module):
  """SongUNet residual block (additive embedding, GroupNorm, SiLU, dropout) + optional attention.

  out = (conv1(dropout(silu(norm1(conv0(silu(norm0(x))) + A emb)))) + skip(x)) / sqrt(2);
  with attention: out <- (proj(softmax(q^T k / sqrt(C)) v) + out) / sqrt(2), one head.
  """

  out_channels: int
  up: bool = False
  down: bool = False
  attention: bool = False
  dropout: float = 0.0
  resample_filter: tuple[int, ...] = (1, 1)
  zero_init_scale: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: Array, emb_BE: Array, train: bool) -> Array:
    c_in, c_out, dt = x_BHWC.shape[-1], self.out_channels, self.dtype
    resample = dict(up=self.up, down=self.down, resample_filter=self.resample_filter, dtype=dt)
    h = nn.silu(group_norm(c_in, dt, "norm0")(x_BHWC))
    h = Conv2D(c_out, 3, name="conv0", **resample)(h)
    h = h + dense(c_out, dt, "affine")(emb_BE)[:, None, None, :]
    h = nn.silu(group_norm(c_out, dt, "norm1")(h))
    if self.dropout > 0:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = Conv2D(c_out, 3, init_gain=self.zero_init_scale, dtype=dt, name="conv1")(h)
    skip = x_BHWC.astype(dt)
    if c_out != c_in or self.up or self.down:
      skip = Conv2D(c_out, 1, name="skip", **resample)(x_BHWC)
    x = (h + skip) * SKIP_SCALE
    if self.attention:
      x = (self._attention(x) + x) * SKIP_SCALE
    return x

  def _attention(self, x_BHWC: Array) -> Array:
    b, h, w, c = x_BHWC.shape
    dt = self.dtype
    qkv = Conv2D(3 * c, 1, init_gain=math.sqrt(0.2), dtype=dt, name="qkv")(
      group_norm(c, dt, "norm2")(x_BHWC)
    )
    # Channel o of the qkv projection is (feature c, role j) with o = 3 c + j, as in EDM.
    qkv_BNC3 = qkv.reshape(b, h * w, c, 3)
    q_BNC, k_BNC, v_BNC = qkv_BNC3[..., 0], qkv_BNC3[..., 1], qkv_BNC3[..., 2]
    # Attention weights softmax(q^T k / sqrt(C)) in float32 (EDM's AttentionOp).
    logits_BNN = jnp.einsum(
      "bqc,bkc->bqk", q_BNC.astype(jnp.float32), k_BNC.astype(jnp.float32)
    ) / math.sqrt(c)
    weights_BNN = jax.nn.softmax(logits_BNN, axis=-1).astype(dt)
    a_BHWC = jnp.einsum("bqk,bkc->bqc", weights_BNN, v_BNC).reshape(b, h, w, c)
    return Conv2D(c, 1, init_gain=self.zero_init_scale, dtype=dt, name="proj")(a_BHWC)
