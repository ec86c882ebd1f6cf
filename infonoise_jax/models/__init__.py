"""Networks F(c_in x; c_noise) of the EDM denoiser, built from `config.model`.

`make_model(config, data_shape)` returns a flax.linen Module used as

  variables = module.init({'params': key}, x, c_noise_B, train=False)
  F = module.apply(variables, x, c_noise_B, train=True, rngs={'dropout': key})

with x the preconditioned input c_in x of per-example shape `data_shape` (H, W, C) or (D,),
c_noise_B = ln(sigma)/4 per example, and F (float32) of x's shape. Parameters are float32;
`model.dtype = "bfloat16"` runs activations and matmuls in bf16. Invalid settings raise
ValueError naming the config key, before anything is traced or compiled.

Models (`model.name`):
  unet  EDM's SongUNet (unet.py). `model.arch` ddpmpp | ncsnpp picks the embedding,
        encoder and resample filter; `model.embedding_type` / `model.encoder_type` override.
        Needs images whose height and width are divisible by 2**(len(channel_mult) - 1).
  mlp   residual MLP (mlp.py) on the flattened input; any data_shape.
  transformer  adaLN-Zero transformer over positions (transformer.py) for token windows
        (L, V): model.width / depth / num_heads / mlp_ratio / pos_embedding.

Recommended settings per dataset, with parameter counts and costs: docs/models.md.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from infonoise_jax.models import unet_layers
from infonoise_jax.models.mlp import MLPDenoiser
from infonoise_jax.models.transformer import POS_EMBEDDINGS, SequenceTransformer
from infonoise_jax.models.unet import ARCHS, SongUNet, unet_channel_counts

__all__ = ["MLPDenoiser", "SequenceTransformer", "SongUNet", "make_model", "param_count"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_MLP_EMB_DIM = 128


def _check(ok: bool, key: str, value: Any, why: str) -> None:
  if not ok:
    raise ValueError(f"config.model.{key}={value!r}: {why}")


def _common_checks(m: Any) -> None:
  _check(m.dtype in _DTYPES, "dtype", m.dtype, f"must be one of {sorted(_DTYPES)}")
  _check(0.0 <= m.dropout < 1.0, "dropout", m.dropout, "must be in [0, 1)")
  emb_ok = m.embedding_type in ("", "positional", "fourier")
  _check(emb_ok, "embedding_type", m.embedding_type, "must be '', positional or fourier")


def _make_unet(m: Any, data_shape: tuple[int, ...]) -> SongUNet:
  _check(m.arch in ARCHS, "arch", m.arch, f"must be one of {sorted(ARCHS)}")
  enc_ok = m.encoder_type in ("", "standard", "residual")
  _check(enc_ok, "encoder_type", m.encoder_type, "must be '', standard or residual")
  mult = tuple(int(v) for v in m.channel_mult)
  _check(len(mult) >= 1 and min(mult) >= 1, "channel_mult", m.channel_mult, "need ints >= 1")
  _check(m.num_blocks >= 1, "num_blocks", m.num_blocks, "must be >= 1")
  mc = m.model_channels
  _check(mc >= 4 and mc % 2 == 0, "model_channels", mc, "must be even and >= 4")
  for c in unet_channel_counts(mc, mult):
    groups = unet_layers.num_groups(c)
    if c % groups:  # which widths fit depends on channel_mult: the nearest ones (128 fits any)
      fits = [n for n in range(4, 2 * mc + 9, 2) if _groups_fit(n, mult)] or [128]
      near = sorted(sorted(fits, key=lambda n: (abs(n - mc), n))[:2])
      _check(False, "model_channels", mc,
             f"{c} channels (a level or decoder concatenation of channel_mult={mult}) do not "
             f"split into the {groups} GroupNorm groups EDM uses (min(32, channels // 4)); e.g. "
             + " or ".join(f"--config.model.model_channels={n}" for n in near))  # fmt: skip
  if len(data_shape) != 3:
    raise ValueError(
      f"config.model.name='unet' needs (H, W, C) images, got data_shape={data_shape}"
    )
  # Any H x W whose sides both halve at every level; a level's resolution (attn_resolutions,
  # parameter names) is its feature map's height.
  (height, width), factor = data_shape[:2], 2 ** (len(mult) - 1)
  fits = lambda n: height % 2 ** (n - 1) == 0 and width % 2 ** (n - 1) == 0
  levels = max(n for n in range(1, len(mult) + 1) if fits(n))
  sides = f"side {height} is" if height == width else f"sides {height} x {width} are"
  # No data.image_size fix: it shrinks by whole factors, and a divisor of the side is never a
  # multiple of a factor the side itself is not; only cropping or padding can help.
  _check(
    height % factor == 0 and width % factor == 0,
    "channel_mult",
    m.channel_mult,
    f"image {sides} not divisible by 2**(len(channel_mult)-1) = {factor}; use fewer "
    f"levels (e.g. --config.model.channel_mult='{tuple(mult[:levels])}') or crop / pad the "
    f"images to sides divisible by {factor}",
  )
  resolutions = [height >> level for level in range(len(mult))]
  attn = tuple(int(r) for r in m.attn_resolutions)
  bad = [r for r in attn if r not in resolutions]
  _check(
    not bad,
    "attn_resolutions",
    m.attn_resolutions,
    f"{bad} not among this image's U-Net resolutions {resolutions}; e.g. "
    f"--config.model.attn_resolutions='({resolutions[-1]},)', or '()' for no attention",
  )
  arch = dict(ARCHS[m.arch])
  emb = m.embedding_type or arch["embedding_type"]
  return SongUNet(
    out_channels=data_shape[-1],
    model_channels=mc,
    channel_mult=mult,
    num_blocks=m.num_blocks,
    attn_resolutions=attn,
    dropout=float(m.dropout),
    embedding_type=emb,
    channel_mult_noise=2 if emb == "fourier" else 1,  # EDM: NCSN++ 2, DDPM++ 1
    encoder_type=m.encoder_type or arch["encoder_type"],
    resample_filter=arch["resample_filter"],
    remat_norm=bool(m.remat_norm),
    dtype=_DTYPES[m.dtype],
  )


def _groups_fit(model_channels: int, mult: tuple[int, ...]) -> bool:
  counts = unet_channel_counts(model_channels, mult)
  return all(c % unet_layers.num_groups(c) == 0 for c in counts)


def _make_mlp(m: Any, data_shape: tuple[int, ...]) -> MLPDenoiser:
  dims = tuple(int(v) for v in m.hidden_dims)
  _check(len(dims) >= 1 and min(dims) >= 1, "hidden_dims", m.hidden_dims, "need ints >= 1")
  if len(data_shape) < 1 or min(data_shape) < 1:
    raise ValueError(f"config.model.name='mlp' needs a non-empty data_shape, got {data_shape}")
  return MLPDenoiser(
    hidden_dims=dims,
    embedding_type=m.embedding_type or "positional",
    emb_dim=_MLP_EMB_DIM,
    dropout=float(m.dropout),
    dtype=_DTYPES[m.dtype],
  )


def _make_transformer(m: Any, data_shape: tuple[int, ...]) -> SequenceTransformer:
  if len(data_shape) != 2:
    raise ValueError(
      f"config.model.name='transformer' needs token windows of shape (L, V), got data_shape="
      f"{data_shape}; use it with data.name=dna | text"
    )
  _check(m.width >= 2 and m.width % 2 == 0, "width", m.width, "must be even and >= 2")
  _check(m.depth >= 1, "depth", m.depth, "must be >= 1")
  _check(m.num_heads >= 1 and m.width % m.num_heads == 0, "num_heads", m.num_heads,
         f"must be >= 1 and divide model.width={m.width}")  # fmt: skip
  _check(m.mlp_ratio >= 1, "mlp_ratio", m.mlp_ratio, "must be >= 1")
  _check(m.pos_embedding in POS_EMBEDDINGS, "pos_embedding", m.pos_embedding,
         f"must be one of {', '.join(POS_EMBEDDINGS)}")  # fmt: skip
  return SequenceTransformer(
    width=int(m.width),
    depth=int(m.depth),
    num_heads=int(m.num_heads),
    mlp_ratio=int(m.mlp_ratio),
    pos_embedding=m.pos_embedding,
    dropout=float(m.dropout),
    emb_dim=int(m.width),
    dtype=_DTYPES[m.dtype],
  )


def make_model(config: Any, data_shape: tuple[int, ...]) -> nn.Module:
  """The network named by `config.model` for per-example `data_shape` (raises ValueError)."""
  m = config.model
  data_shape = tuple(int(d) for d in data_shape)
  _common_checks(m)
  if m.name == "unet":
    return _make_unet(m, data_shape)
  if m.name == "mlp":
    return _make_mlp(m, data_shape)
  if m.name == "transformer":
    return _make_transformer(m, data_shape)
  raise ValueError(f"config.model.name={m.name!r}: must be 'unet', 'mlp' or 'transformer'")


def param_count(module: nn.Module, data_shape: tuple[int, ...]) -> int:
  """Number of parameters, from shapes only (jax.eval_shape; nothing is allocated)."""
  x = jax.ShapeDtypeStruct((1, *data_shape), jnp.float32)
  c = jax.ShapeDtypeStruct((1,), jnp.float32)
  shapes = jax.eval_shape(
    lambda x, c: module.init({"params": jax.random.key(0)}, x, c, train=False), x, c
  )
  return sum(int(v.size) for v in jax.tree.leaves(shapes["params"]))
