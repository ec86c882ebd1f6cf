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

import contextlib
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

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


# What the backward pass of a recomputed normalisation keeps (GroupNorm `remat`): the
# per-(example, channel) affine map and the dropout mask, so that neither the statistics
# pass nor the random draws are repeated.
_REMAT_POLICY = jax.checkpoint_policies.save_only_these_names("norm_affine", "dropout_keep")


class GroupNorm(nn.Module):
  """GroupNorm (EDM: min(32, C // 4) groups, epsilon 1e-6) from per-channel statistics.

  `__call__(x_BHWC, shift_BC=None, dropout_rate=0.0, dropout_rng=None)` normalises x + shift
  (shift broadcast over H and W) without materialising the sum. Statistics are sums of x and
  x^2 over H, W per (example, channel) in float32, combined per group (var = E[x^2] - E[x]^2,
  like flax's default `use_fast_variance`); the normalisation is then one per-channel affine
  map x a + b. On GPU this keeps the reductions on contiguous channels and the backward pass
  to one reduction and one elementwise pass (docs/design.md, "U-Net speed"). Parameters
  `scale` and `bias` as in `flax.linen.GroupNorm`.

  `silu` applies SiLU to the result, then `dropout` (`dropout_rate` > 0) drops elements.
  `remat` recomputes all of it in the backward pass from the input, keeping only the affine
  map and the dropout mask: the normalised activation is neither stored for the backward
  pass nor read back (model.remat_norm); the values are the same.
  """

  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  silu: bool = False
  remat: bool = False

  @nn.compact
  def __call__(
    self,
    x_BHWC: Array,
    shift_BC: Array | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
  ) -> Array:
    c = x_BHWC.shape[-1]
    scale_C = self.param("scale", nn.initializers.ones_init(), (c,), jnp.float32)
    bias_C = self.param("bias", nn.initializers.zeros_init(), (c,), jnp.float32)
    fn = functools.partial(
      _group_norm, epsilon=self.epsilon, dtype=self.dtype, silu=self.silu, rate=dropout_rate
    )
    if self.remat:
      fn = jax.checkpoint(fn, policy=_REMAT_POLICY)
    return fn(x_BHWC, shift_BC, scale_C, bias_C, dropout_rng)


def _group_norm(x_BHWC, shift_BC, scale_C, bias_C, rng, *, epsilon, dtype, silu, rate):
  b, h, w, c = x_BHWC.shape
  g = num_groups(c)
  x32 = x_BHWC.astype(jnp.float32)
  s1_BC = jnp.sum(x32, axis=(1, 2))
  s2_BC = jnp.sum(jnp.square(x32), axis=(1, 2))
  n = h * w
  if shift_BC is not None:  # sums of (x + e): s2 + 2 e s1 + n e^2, s1 + n e
    e_BC = shift_BC.astype(jnp.float32)
    s2_BC = s2_BC + 2.0 * e_BC * s1_BC + n * jnp.square(e_BC)
    s1_BC = s1_BC + n * e_BC
  count = n * (c // g)
  mean_BG = s1_BC.reshape(b, g, c // g).sum(-1) / count
  var_BG = jnp.maximum(s2_BC.reshape(b, g, c // g).sum(-1) / count - jnp.square(mean_BG), 0.0)
  rstd_BC = jnp.repeat(jax.lax.rsqrt(var_BG + epsilon), c // g, axis=1)
  mean_BC = jnp.repeat(mean_BG, c // g, axis=1)
  a_BC = rstd_BC * scale_C
  b_BC = bias_C - mean_BC * a_BC
  if shift_BC is not None:
    b_BC = b_BC + e_BC * a_BC
  a_BC, b_BC = checkpoint_name(a_BC, "norm_affine"), checkpoint_name(b_BC, "norm_affine")
  y = (x32 * a_BC[:, None, None, :] + b_BC[:, None, None, :]).astype(dtype)
  if silu:
    y = nn.silu(y)
  if rate > 0:
    y = dropout(y, rate, rng)
  return y


def group_norm(dtype: Dtype, name: str, silu: bool = False, remat: bool = False) -> GroupNorm:
  """GroupNorm with EDM's SongUNet epsilon 1e-6; the groups follow the input's channels."""
  return GroupNorm(epsilon=1e-6, dtype=dtype, silu=silu, remat=remat, name=name)


def dropout(x_BHWC: Array, rate: float, rng: Array) -> Array:
  """Inverted dropout from 16 random bits per element, two elements per threefry word.

  An element is dropped when its 16-bit draw is below round(rate * 2^16) (the rate is exact
  to 2^-17); kept elements are scaled by 1 / (1 - that rate). The 32-bit words are drawn
  for half the channels and kept in memory (optimization barrier), then split in two: one
  threefry hash per two elements instead of one per element, which is what made dropout
  the costliest elementwise work of the U-Net step on GPU (docs/design.md, "U-Net speed").
  Threefry keeps the masks independent of how the batch is sharded. The mask is named
  "dropout_keep" for a recomputed GroupNorm to keep (`_REMAT_POLICY`).
  """
  *lead, c = x_BHWC.shape
  if c % 2:
    raise ValueError(f"dropout needs an even channel count, got {c}")
  threshold = int(round(rate * 2**16))
  keep_prob = 1.0 - threshold / 2**16
  words = jax.lax.optimization_barrier(jax.random.bits(rng, (*lead, c // 2), jnp.uint32))
  bits = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(x_BHWC.shape)
  keep = checkpoint_name(bits >= jnp.uint16(threshold), "dropout_keep")
  return jnp.where(keep, x_BHWC / jnp.asarray(keep_prob, x_BHWC.dtype), jnp.zeros((), x_BHWC.dtype))


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


def conv2d(x_BHWC: Array, w_KKIO: Array, pad: int) -> Array:
  """Stride-1 convolution with `pad` pixels of zero padding on every side: every Conv2D's
  convolution goes through here (one place to swap it: `tap_weight_gradients`)."""
  return jax.lax.conv_general_dilated(
    x_BHWC, w_KKIO, (1, 1), [(pad, pad), (pad, pad)], dimension_numbers=_DIMS
  )


_plain_conv2d = conv2d  # the original, whatever tap_weight_gradients swaps in


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d_taps(x_BHWC: Array, w_KKIO: Array, pad: int) -> Array:
  """`conv2d` with its weight gradient as k*k matmuls, one per tap of the kernel.

  Same values as `conv2d` (forward and both gradients, up to rounding). Why it exists: jax
  batches the weight gradient of a convolution vmapped over stacked weights (several runs in
  one step, multirun.py) into a grouped convolution whose window is the whole image, which
  the GPU runs slowly; vmapped, these matmuls become batched matmuls (measured on an H200 in
  experiments/RESULTS.md section 9)."""
  return _plain_conv2d(x_BHWC, w_KKIO, pad)


def _conv_taps_fwd(x_BHWC, w_KKIO, pad):
  return _plain_conv2d(x_BHWC, w_KKIO, pad), (x_BHWC, w_KKIO)


def _conv_taps_bwd(pad, res, dy_BHWO):
  x_BHWC, w_KKIO = res
  _, vjp_x = jax.vjp(lambda x: _plain_conv2d(x, w_KKIO, pad), x_BHWC)
  (dx,) = vjp_x(dy_BHWO)
  xp = jnp.pad(x_BHWC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  h, w, k = dy_BHWO.shape[1], dy_BHWO.shape[2], w_KKIO.shape[0]
  taps = [
    [jnp.einsum("bhwc,bhwo->co", xp[:, i : i + h, j : j + w], dy_BHWO) for j in range(k)]
    for i in range(k)
  ]
  return dx, jnp.stack([jnp.stack(row) for row in taps]).astype(w_KKIO.dtype)


conv2d_taps.defvjp(_conv_taps_fwd, _conv_taps_bwd)


@contextlib.contextmanager
def tap_weight_gradients(on: bool = True):
  """Inside the block, every Conv2D traced uses `conv2d_taps` (on) or the plain convolution
  (off); the previous choice comes back on exit. The choice is made when a program is
  traced: one traced inside keeps it, and a function jitted and traced before the block keeps
  the plain convolution when called inside it. For side-by-side runs
  (experiments/compare_schedules.py `--conv_wgrad`): measured 1.61x faster for 3 vmapped seeds
  on an H200; unmeasured for a single run there (no faster on a CPU)."""
  global conv2d
  before = conv2d
  conv2d = conv2d_taps if on else _plain_conv2d
  try:
    yield
  finally:
    conv2d = before


class Conv2D(nn.Module):
  """k x k convolution ('same' padding) with optional FIR up/down-sampling around it.

  kernel=0 resamples only. `add_bias=False` returns (conv output, bias) for the caller to
  add. Unfused: resample, then convolve. `fused_down` convolves first
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
  add_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: Array) -> Array | tuple[Array, Array]:
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
    x = conv2d(x, w.astype(self.dtype), p)
    if self.down and self.fused_down:
      x = downsample(x, self.resample_filter, pad=False)
    if not self.add_bias:  # the caller adds it (e.g. folded into a GroupNorm shift)
      return x, b
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
  remat_norm: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: Array, emb_BE: Array, train: bool) -> Array:
    c_in, c_out, dt = x_BHWC.shape[-1], self.out_channels, self.dtype
    resample = dict(up=self.up, down=self.down, resample_filter=self.resample_filter, dtype=dt)
    h = group_norm(dt, "norm0", silu=True, remat=self.remat_norm)(x_BHWC)
    h, bias_C = Conv2D(c_out, 3, add_bias=False, name="conv0", **resample)(h)
    # norm1(h + bias + A emb) without materialising the sum: the bias and the embedding
    # enter as a per-(example, channel) shift, so their gradients come from the norm's
    # statistics instead of extra passes over h.
    shift_BC = dense(c_out, dt, "affine")(emb_BE).astype(jnp.float32) + bias_C
    rate = self.dropout if train else 0.0
    rng = self.make_rng("dropout") if rate > 0 else None
    h = group_norm(dt, "norm1", silu=True, remat=self.remat_norm)(h, shift_BC, rate, rng)
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
      group_norm(dt, "norm2", remat=self.remat_norm)(x_BHWC)
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
