"""EDM's SongUNet (the DDPM++ and NCSN++ U-Nets of Song et al. 2021) in Flax linen.

Computes F(c_in x; c_noise) of the EDM denoiser (docs/method.md section 2): input the
preconditioned image x_BHWC (c_in x) and c_noise_B = ln(sigma) / 4, output F with x's shape.

Layout (EDM `SongUNet`, unconditional; parameter names mirror the PyTorch module names):
  mapping  emb = silu(W1 silu(W0 embed(c_noise))) with 4 * model_channels features;
  encoder  per resolution: (stride-2 down block), num_blocks blocks, all outputs kept as skips;
           'residual' encoder (NCSN++) adds a progressive input path from the image;
  decoder  two blocks at the lowest resolution (first with attention), per resolution
           (up block), num_blocks + 1 blocks each eating one skip; GroupNorm, SiLU and a
           3x3 output conv with near-zero init (gain `zero_init_scale`, EDM: 1e-5).
Arch presets: ddpmpp = positional embedding (model_channels features), standard encoder,
resample filter [1, 1]; ncsnpp = Fourier embedding (2 * model_channels), residual encoder,
filter [1, 3, 3, 1]. Both use the standard decoder.

Parameter counts, CIFAR-10 (32x32x3, 128 channels, mult (2, 2, 2), 4 blocks, attention at 16),
checked against the PyTorch reference (`training/networks.py`, torch 2.13 CPU, counting
`net.parameters()` of SongUNet with EDM's train.py arch settings):
  ddpmpp 55,732,739 (augment_dim=0) / 55,733,891 (augment_dim=9, EDM's CIFAR-10 recipe)
  ncsnpp 56,395,523 (augment_dim=0) / 56,397,827 (augment_dim=9)
EDM's NCSN++ Fourier frequencies are a random buffer; here they are a fixed constant.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from infonoise_jax.models import unet_layers as L

Array = jax.Array

ARCHS = {
  "ddpmpp": dict(embedding_type="positional", encoder_type="standard", resample_filter=(1, 1)),
  "ncsnpp": dict(embedding_type="fourier", encoder_type="residual", resample_filter=(1, 3, 3, 1)),
}


class _Encoder(nn.Module):
  """Encoder of the SongUNet; returns the bottom activation and the skip list."""

  model_channels: int
  channel_mult: tuple[int, ...]
  num_blocks: int
  attn_resolutions: tuple[int, ...]
  residual: bool
  block_kwargs: dict

  @nn.compact
  def __call__(self, x_BHWC: Array, emb_BE: Array, train: bool) -> tuple[Array, list[Array]]:
    res0 = x_BHWC.shape[1]
    kw = self.block_kwargs
    aux = x_BHWC
    skips = []
    x = x_BHWC
    for level, mult in enumerate(self.channel_mult):
      res = res0 >> level
      tag = f"{res}x{res}"
      if level == 0:
        x = L.Conv2D(self.model_channels, 3, dtype=kw["dtype"], name=f"{tag}_conv")(x)
      else:
        x = L.UNetBlock(x.shape[-1], down=True, name=f"{tag}_down", **kw)(x, emb_BE, train)
        if self.residual:  # progressive input: aux <- (x + down-conv(aux)) / sqrt(2)
          aux_conv = L.Conv2D(
            x.shape[-1],
            3,
            down=True,
            fused_down=True,
            resample_filter=kw["resample_filter"],
            dtype=kw["dtype"],
            name=f"{tag}_aux_residual",
          )
          x = aux = (x + aux_conv(aux)) * L.SKIP_SCALE
      skips.append(x)
      for idx in range(self.num_blocks):
        attn = res in self.attn_resolutions
        block = L.UNetBlock(
          self.model_channels * mult, attention=attn, name=f"{tag}_block{idx}", **kw
        )
        x = block(x, emb_BE, train)
        skips.append(x)
    return x, skips


class _Decoder(nn.Module):
  """Decoder of the SongUNet ('standard': a single output head at full resolution)."""

  model_channels: int
  channel_mult: tuple[int, ...]
  num_blocks: int
  attn_resolutions: tuple[int, ...]
  out_channels: int
  block_kwargs: dict

  @nn.compact
  def __call__(self, x: Array, skips: list[Array], emb_BE: Array, train: bool) -> Array:
    kw = self.block_kwargs
    dt = kw["dtype"]
    skips = list(skips)
    res0 = skips[0].shape[1]
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = res0 >> level
      tag = f"{res}x{res}"
      c = x.shape[-1]
      if level == len(self.channel_mult) - 1:
        x = L.UNetBlock(c, attention=True, name=f"{tag}_in0", **kw)(x, emb_BE, train)
        x = L.UNetBlock(c, name=f"{tag}_in1", **kw)(x, emb_BE, train)
      else:
        x = L.UNetBlock(c, up=True, name=f"{tag}_up", **kw)(x, emb_BE, train)
      for idx in range(self.num_blocks + 1):
        x = jnp.concatenate([x, skips.pop().astype(x.dtype)], axis=-1)
        attn = idx == self.num_blocks and res in self.attn_resolutions
        block = L.UNetBlock(
          self.model_channels * mult, attention=attn, name=f"{tag}_block{idx}", **kw
        )
        x = block(x, emb_BE, train)
    tag = f"{res0}x{res0}"
    x = L.group_norm(dt, f"{tag}_aux_norm", silu=True, remat=kw["remat_norm"])(x)
    gain = kw["zero_init_scale"]
    return L.Conv2D(self.out_channels, 3, init_gain=gain, dtype=dt, name=f"{tag}_aux_conv")(x)


class SongUNet(nn.Module):
  """DDPM++ / NCSN++ U-Net: `apply(v, x_BHWC, c_noise_B, train)` -> F_BHWC (float32).

  `augment_dim` > 0 adds EDM's augmentation-label mapping (bias-free linear into the noise
  embedding); without labels it is fed zeros, i.e. "no augmentation".
  """

  out_channels: int
  model_channels: int = 128
  channel_mult: tuple[int, ...] = (2, 2, 2)
  channel_mult_emb: int = 4
  num_blocks: int = 4
  attn_resolutions: tuple[int, ...] = (16,)
  dropout: float = 0.1
  embedding_type: str = "positional"
  channel_mult_noise: int = 1
  encoder_type: str = "standard"
  resample_filter: tuple[int, ...] = (1, 1)
  augment_dim: int = 0
  zero_init_scale: float = 1e-5
  remat_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    x_BHWC: Array,
    c_noise_B: Array,
    train: bool = False,
    augment_labels_BA: Array | None = None,
  ) -> Array:
    dt = self.dtype
    emb_BE = self._embed(c_noise_B, augment_labels_BA)
    block_kwargs = dict(
      dropout=self.dropout,
      resample_filter=tuple(self.resample_filter),
      zero_init_scale=self.zero_init_scale,
      remat_norm=self.remat_norm,
      dtype=dt,
    )
    common = dict(
      model_channels=self.model_channels,
      channel_mult=tuple(self.channel_mult),
      num_blocks=self.num_blocks,
      attn_resolutions=tuple(self.attn_resolutions),
      block_kwargs=block_kwargs,
    )
    residual = self.encoder_type == "residual"
    x, skips = _Encoder(residual=residual, name="enc", **common)(x_BHWC.astype(dt), emb_BE, train)
    out = _Decoder(out_channels=self.out_channels, name="dec", **common)(x, skips, emb_BE, train)
    return out.astype(jnp.float32)

  def _embed(self, c_noise_B: Array, augment_labels_BA: Array | None) -> Array:
    """Noise embedding -> two SiLU-activated linear layers (EDM's mapping network)."""
    noise_ch = self.model_channels * self.channel_mult_noise
    emb_ch = self.model_channels * self.channel_mult_emb
    c_noise_B = jnp.reshape(c_noise_B, (-1,))
    if self.embedding_type == "positional":
      emb = L.positional_embedding(c_noise_B, noise_ch)
    else:
      emb = L.fourier_embedding(c_noise_B, noise_ch)
    if self.augment_dim:
      if augment_labels_BA is None:
        augment_labels_BA = jnp.zeros((emb.shape[0], self.augment_dim), jnp.float32)
      emb = emb + L.dense(noise_ch, self.dtype, "map_augment", use_bias=False)(augment_labels_BA)
    emb = nn.silu(L.dense(emb_ch, self.dtype, "map_layer0")(emb))
    return nn.silu(L.dense(emb_ch, self.dtype, "map_layer1")(emb))


def unet_channel_counts(model_channels: int, channel_mult: tuple[int, ...]) -> list[int]:
  """Every channel count a GroupNorm sees: block outputs and decoder concatenations."""
  outs = [model_channels] + [model_channels * m for m in channel_mult]
  return sorted({a for a in outs} | {a + b for a in outs for b in outs})
