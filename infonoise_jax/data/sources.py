"""Training data sources: load `config.data` into a `Source` of float32 examples.

Every source yields examples in [-scale, scale] (`data.scale`; EDM's sigma_data = 0.5 suits
scale 1 images; the unbounded Gaussian mixture has means ~ N(0, (scale/2)^2)), images as
(H, W, C) and vectors as (D,). Images map their pixel range
[0, max] linearly onto [-1, 1] (mid-range -> 0), are optionally box-averaged down to
`data.image_size`, optionally binarized (value > 0 -> +1, else -1; docs/method.md's binarized
data is +-0.5, i.e. scale 0.5) and finally multiplied by `scale`.

  digits               scikit-learn digits, 1797 x 8x8x1, pixels 0..16 (embedded default).
  fashion_mnist_local  Debian `dataset-fashion-mnist` IDX files, 60000 (train) / 10000 (test).
  gaussian_mixture     fixed seeded set from an equal-weight isotropic Gaussian mixture;
                       `Source.mixture` exposes its means and std for exact posteriors.
  toy2d[:kind]         2-D vectors: checkerboard (default), ring or moons.
  dna, text            token windows (data/sequences.py), encoded as centred scaled one-hot
                       (L, V) arrays (data/tokens.py); split 'train' | 'test' (held out).
  tfds:<name>          any TFDS dataset with a fixed-size uint8 image feature, read by random
                       access (`builder.as_data_source`, no TensorFlow); never downloads.
  images               the user's own images at `data.path`: a .npy / .npz array (N, H, W[, C])
                       of uint8 (or integers in 0..255, bool, floats in [0, 1]), or a folder of
                       image files (PNG, JPEG, ...; each folder's files in sorted order, then
                       its subfolders; RGB if any is in colour, else grayscale; alpha dropped).
                       One split ('train'); all images of one size, 1 or 3 channels.

Small sets are held in memory as one float32 array; tfds sets above `MAX_IN_MEMORY_BYTES`
are read lazily, a batch at a time. Synthetic sets are fixed: split 'train' draws from
seed 0, 'test' from seed 1, independent of the training seed.
"""

import dataclasses
import gzip
import hashlib
import importlib.util
import json
import math
import os
import zlib
from collections.abc import Callable

import ml_collections
import numpy as np
from absl import logging

from infonoise_jax.data import folders, sequences, synthetic
from infonoise_jax.data.synthetic import GaussianMixture
from infonoise_jax.data.tokens import TokenEncoding

MAX_IN_MEMORY_BYTES = 2 * 2**30  # float32 bytes above which a tfds set is read lazily
# Integer images whose brightest pixel is below this are warned about: they are read as
# 0..255 like any integer pixels, which leaves such data dark and nearly constant.
LOW_INTEGER_MAX = 128
LOCAL_NAMES = ("digits", "fashion_mnist_local", "gaussian_mixture", "toy2d")
TOKEN_NAMES = ("dna", "text")
OWN_IMAGES = "images"  # data.name of the user's own images at data.path
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VALID_NAMES = (
  *LOCAL_NAMES,
  OWN_IMAGES,
  *TOKEN_NAMES,
  *(f"toy2d:{k}" for k in synthetic.TOY2D_KINDS),
  "tfds:<name>",
)
_SYNTHETIC_SEEDS = {"train": 0, "test": 1}
_FASHION_FILES = {"train": "train-{}-idx{}-ubyte.gz", "test": "t10k-{}-idx{}-ubyte.gz"}
# A Fashion-MNIST folder holding this file keeps only which side of the binarization threshold
# each pixel lies on (experiments/one_call_bundle.py): the data for data.binarize runs only.
TWO_LEVEL_MARKER = "TWO_LEVEL"


def _count(n: int, noun: str) -> str:
  """'1 window', '3 windows': a count with its noun in the number it takes."""
  return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  """A fixed set of float32 examples in [-scale, scale], in memory or read lazily."""

  name: str
  shape: tuple[int, ...]  # one example: (H, W, C) or (D,)
  num_examples: int
  is_image: bool
  scale: float
  binarized: bool = False
  array: np.ndarray | None = None  # (N, *shape) float32, when held in memory
  reader: Callable[[np.ndarray], np.ndarray] | None = None  # lazy: indices -> (B, *shape)
  labels: np.ndarray | None = None  # (N,) int class / component labels, where known
  mixture: GaussianMixture | None = None  # gaussian_mixture: the generating distribution
  encoding: TokenEncoding | None = None  # token sources: vocabulary and one-hot scale
  token_ids: np.ndarray | None = None  # token sources: (N, L) int32 windows
  stats: sequences.SplitStats | None = None  # token sources: what cutting the windows found

  def get(self, indices_B: np.ndarray) -> np.ndarray:
    """Examples at `indices_B` as a new (B, *shape) float32 array."""
    if self.array is not None:
      return np.take(self.array, indices_B, axis=0)
    return self.reader(np.asarray(indices_B))

  def describe(self) -> str:
    if self.encoding is not None:
      st, enc = self.stats, self.encoding
      vocab = repr(enc.vocab[:40]) + (f" and {enc.size - 40} more" if enc.size > 40 else "")
      # Held-out windows equal to a training window are dropped from the held-out split only.
      dup = f", {_count(st.duplicate_windows, 'window')} equal to a training window dropped"
      return (
        f"{self.name}: {_count(self.num_examples, 'window')} of {self.shape[0]} tokens over "
        f"{_count(enc.size, 'symbol')} {vocab}, one-hot scale {enc.scale:g} (sigma_data "
        f"{enc.sigma_data:.4g}), from {_count(st.groups, 'sequence')} / "
        f"{_count(st.letters, 'letter')}; {_count(st.unknown_letters, 'unknown letter')}, "
        f"{_count(st.dropped_windows, 'window')} dropped, "
        f"{_count(st.short_sequences, 'sequence')} shorter than a window"
        + (dup if st.duplicate_windows else "")
      )
    kind = "image" if self.is_image else "vector"
    s = f"{self.scale:g}"
    values = f"values {{-{s}, +{s}}}" if self.binarized else f"values in [-{s}, {s}]"
    if self.mixture is not None:
      k, std = len(self.mixture.weights_K), self.mixture.std
      values = f"{k} Gaussian components of std {std:g}"
    where = "in memory" if self.array is not None else "read lazily"
    return f"{self.name}: {self.num_examples} {kind}s of shape {self.shape}, {values}, {where}"


DATA_PATH_KEYS = ("path", "local_dir", "tfds_data_dir")
# Where a run's data lies: the part of a trained run's config that its sample, evaluate and
# diagnose commands may change (--set data.path=<new place>), e.g. after the data moved.
DATA_LOCATION_KEYS = tuple(f"data.{k}" for k in DATA_PATH_KEYS)


def data_location_items(overrides) -> list[str]:
  """The `key=value` items of `overrides` that say where a run's data now lies."""
  return [o for o in overrides if o.split("=", 1)[0].strip() in DATA_LOCATION_KEYS]


def resolve_data_paths(config: ml_collections.ConfigDict) -> None:
  """Local data folders and files as absolute paths, so the run's config.json finds them from
  any directory (sample, evaluate, diagnose and a resume need not start where training did).
  Remote URLs (gs://...) and unset ('') values are left as they are."""
  for key in DATA_PATH_KEYS:
    value = config.data[key]
    if value and "://" not in value:
      config.data[key] = os.path.abspath(os.path.expanduser(value))


def resolve_sigma_data(
  config: ml_collections.ConfigDict,
  encoding: TokenEncoding | None,
  how_to_set: str = "--config.edm.sigma_data=<std>",
) -> None:
  """edm.sigma_data = 0 means the token encoding's std a sqrt(V - 1) / V (data/tokens.py);
  `encoding` is the data's (`Source.encoding`), None for data that is not tokens."""
  if config.edm.sigma_data:
    return
  if encoding is None:
    raise ValueError(
      f"config.edm.sigma_data=0 (follow the token encoding) needs token data, but data.name="
      f"{config.data.name!r}; pass {how_to_set} (the data's std, e.g. 0.5)"
    )
  config.edm.sigma_data = encoding.sigma_data


def tfds_set(name: str) -> str | None:
  """The tfds set a data.name reads ('tfds:<set>' -> '<set>'); None when it names no tfds set."""
  if not name.startswith("tfds:"):
    return None
  return name[len("tfds:") :] or None


def load_source(config: ml_collections.ConfigDict) -> Source:
  """Builds the training `Source` from `config.data`; fails fast with the offending key."""
  d = config.data
  name = d.name
  if d.scale <= 0:
    raise ValueError(f"data.scale must be > 0, got {d.scale}")
  if d.path and name not in (OWN_IMAGES, *TOKEN_NAMES):
    raise ValueError(
      f"data.path={d.path!r} is set but data.name={name!r} does not read it; to train on that "
      f"file or folder add --config.data.name={OWN_IMAGES} (images) or dna / text (sequences), "
      "or leave data.path empty"
    )
  if tfds_name := tfds_set(name):
    return tfds_source(tfds_name, d)
  if name in TOKEN_NAMES:
    return token_source(d)
  if name == OWN_IMAGES:
    return own_images_source(d)
  base, _, kind = name.partition(":")
  if base not in LOCAL_NAMES or (kind and (base != "toy2d" or kind not in synthetic.TOY2D_KINDS)):
    raise ValueError(f"Unknown data.name={name!r}; valid: {', '.join(VALID_NAMES)}")
  if d.split not in _SYNTHETIC_SEEDS or (base == "digits" and d.split != "train"):
    valid = "train" if base == "digits" else "train | test"
    raise ValueError(f"data.split={d.split!r} is not a split of {name!r}; valid: {valid}")
  if base == "digits":
    return _digits(d)
  if base == "fashion_mnist_local":
    return _fashion_mnist_local(d)
  if d.image_size or d.binarize or d.random_flip:
    raise ValueError(
      f"data.name={name!r} is a vector source: data.image_size must be 0 and "
      "data.binarize / data.random_flip False"
    )
  seed = _SYNTHETIC_SEEDS[d.split]
  _check_synthetic_fits(d.num_examples, d.dim if base == "gaussian_mixture" else 2)
  if base == "gaussian_mixture":
    mixture = GaussianMixture.make(d.num_components, d.dim, d.scale, d.component_std)
    x_ND, k_N = mixture.draw(d.num_examples, seed)
    return Source(name, (d.dim,), d.num_examples, False, d.scale, False, x_ND, None, k_N, mixture)
  x_N2 = synthetic.toy2d(kind or "checkerboard", d.num_examples, seed) * np.float32(d.scale)
  return Source(name, (2,), d.num_examples, False, d.scale, array=x_N2)


def _check_synthetic_fits(num_examples: int, dim: int) -> None:
  """A synthetic set is drawn whole on the host (float64 draws, float32 points): one too big
  for this machine's memory was a numpy MemoryError traceback."""
  need, have = num_examples * dim * (8 + 4), physical_memory_bytes()
  if have is None:  # not on this platform: let numpy say it
    return
  if need > have:
    raise ValueError(
      f"data.num_examples={num_examples} points of {dim} dimensions need about "
      f"{need / 2**30:.0f} GiB of host memory to draw, more than this machine's "
      f"{have / 2**30:.0f} GiB; lower data.num_examples"
    )


def images_to_float(
  u_NHWC: np.ndarray, max_value: float, image_size: int, binarize: bool, scale: float
) -> np.ndarray:
  """Pixels in [0, max_value] -> float32 in [-scale, scale] (module docstring order)."""
  x = u_NHWC.astype(np.float32) * np.float32(2.0 / max_value) - np.float32(1.0)
  n, h, w, c = x.shape
  if image_size and image_size != h:
    f = h // image_size  # box average over f x f blocks (validated by check_image_shape)
    x = x.reshape(n, image_size, f, w // f, f, c).mean(axis=(2, 4))
  if binarize:
    x = np.where(x > 0, np.float32(1.0), np.float32(-1.0))
  return x * np.float32(scale)


def check_image_shape(name: str, native_HWC: tuple[int, ...], image_size: int) -> tuple:
  """The (H, W, C) a source yields after resizing; ValueError when it cannot produce it.

  data.image_size is the height after box averaging by an integer factor f = H / image_size;
  the width shrinks by the same f (square images stay square), so f must divide both."""
  if len(native_HWC) != 3 or None in native_HWC:
    raise ValueError(f"{name}: images must have a fixed (H, W, C) shape, got {native_HWC}")
  h, w, c = native_HWC
  if image_size == 0 or image_size == h:
    return (h, w, c)
  if image_size < 0 or h % image_size or w % (h // image_size):
    sizes = [s for s in range(1, h + 1) if h % s == 0 and w % (h // s) == 0]
    raise ValueError(
      f"data.image_size={image_size} cannot be made from {name}'s {h}x{w} images (box "
      f"averaging height and width by one integer factor); valid: 0 (native) or one of {sizes}"
    )
  return (image_size, w // (h // image_size), c)


def _image_source(name: str, u_NHWC: np.ndarray, max_value: float, d, labels=None) -> Source:
  shape = check_image_shape(name, u_NHWC.shape[1:], d.image_size)
  x = images_to_float(u_NHWC, max_value, d.image_size, d.binarize, d.scale)
  if d.binarize:
    check_binarized(name, x, max_value)
  return Source(name, shape, len(x), True, d.scale, d.binarize, x, None, labels)


def check_binarized(name: str, x: np.ndarray, max_value: float) -> None:
  """data.binarize thresholds each pixel at half its range (max_value / 2): data that never
  crosses it (dark images, or floats filling only [0, 0.4]) would train as blank images."""
  bright = float(np.mean(x > 0))
  if bright in (0.0, 1.0):
    level = "below" if bright == 0.0 else "above"
    raise ValueError(
      f"{name}: data.binarize=True thresholds pixels at {max_value / 2:g} (half of their range "
      f"0..{max_value:g}), and every pixel of the {len(x)} images is {level} it, so all would "
      f"train as one blank level. Rescale the images to fill 0..{max_value:g} (e.g. x / x.max() "
      "for floats), or leave data.binarize off."
    )
  if min(bright, 1.0 - bright) < 0.001:
    logging.warning(
      "%s: data.binarize=True leaves %.4f%% of the pixels %s half of the range 0..%g: nearly "
      "blank images; check that the threshold suits this data (rescale it to fill the range).",
      name, 100 * min(bright, 1.0 - bright), "above" if bright < 0.5 else "below", max_value,
    )  # fmt: skip


def _digits(d) -> Source:
  pixels, labels = read_digits()
  return _image_source("digits", pixels.reshape(-1, 8, 8, 1), 16.0, d, labels)


def read_digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's embedded 8x8 digits: (1797, 64) pixels in 0..16 and (1797,) int32 labels.

  Read from the CSV file scikit-learn ships (`sklearn/datasets/data/digits.csv.gz`, 64 pixel
  columns and the label per row) without importing scikit-learn, whose import (scipy.stats
  among others) added about 0.7 s to every run's start-up; the same values as
  `sklearn.datasets.load_digits` (tested). A scikit-learn whose files are laid out otherwise
  is read through `load_digits`.
  """
  spec = importlib.util.find_spec("sklearn")
  if spec is None:
    raise ValueError(
      "data.name='digits' needs scikit-learn (its embedded digits): pip install scikit-learn, "
      "or set data.name to another source"
    )
  path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
  try:
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
  except (OSError, ValueError):  # absent, or not the 65-number rows expected
    table = None
  if table is not None and table.shape == (1797, 65):
    return table[:, :64], table[:, 64].astype(np.int32)
  from sklearn.datasets import load_digits

  digits = load_digits()
  return digits.data, digits.target.astype(np.int32)


def read_idx(path: str) -> np.ndarray:
  """Reads a gzip'ed IDX file of unsigned bytes (the MNIST format) into a uint8 array."""
  fix = "reinstall it (apt-get install --reinstall dataset-fashion-mnist) or fix data.local_dir"
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (gzip.BadGzipFile, EOFError, zlib.error) as e:
    raise ValueError(f"{path} is not a complete gzip file ({e}); {fix}") from e
  if raw[:3] != b"\x00\x00\x08" or len(raw) < 4 + 4 * raw[3]:
    raise ValueError(f"{path}: not an IDX file of unsigned bytes; {fix}")
  ndim = raw[3]
  dims = np.frombuffer(raw, ">u4", ndim, 4).astype(np.int64)
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != np.prod(dims):
    raise ValueError(f"{path}: header says {tuple(dims)} but holds {data.size} bytes; {fix}")
  return data.reshape(dims)


def fashion_mnist_names(split: str) -> tuple[str, str]:
  """(images, labels): the IDX file names of a Fashion-MNIST split."""
  images, labels = (_FASHION_FILES[split].format(k, n) for k, n in (("images", 3), ("labels", 1)))
  return images, labels


def _fashion_mnist_files(local_dir: str, split: str) -> tuple[str, str]:
  """(images, labels): the IDX files of a Fashion-MNIST split in `local_dir`, which must exist."""
  image_file, label_file = (os.path.join(local_dir, n) for n in fashion_mnist_names(split))
  for path in (image_file, label_file):
    if not os.path.exists(path):
      raise FileNotFoundError(
        f"data.name='fashion_mnist_local' needs {path} (data.local_dir={local_dir!r}). "
        "Install it with: apt-get install dataset-fashion-mnist"
      )
  return image_file, label_file


def fashion_mnist_fingerprint(local_dir: str) -> str:
  """A short digest of the content of the Fashion-MNIST train images in `local_dir` (the file
  the FID reference reads): the reference cache's name for data.name='fashion_mnist_local', so
  two folders of other IDX files never share statistics, while the same files share them
  wherever they lie (a 26 MB file: ~0.1 s)."""
  image_file, _ = _fashion_mnist_files(local_dir, "train")
  h = hashlib.sha256()
  with open(image_file, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()[:12]


def tfds_dir_fingerprint(tfds_data_dir: str) -> str:
  """A short digest of the resolved folder tfds sets are read from (data.tfds_data_dir, else
  tfds's default: $TFDS_DATA_DIR or ~/tensorflow_datasets): the reference cache's name for
  data.name='tfds:<name>', so two folders holding a set of one name never share statistics,
  while runs reading one folder, by any spelling of its path, share them."""
  import tensorflow_datasets as tfds

  folder = os.path.realpath(os.path.expanduser(tfds_data_dir or tfds.core.constants.DATA_DIR))
  return hashlib.sha256(folder.encode()).hexdigest()[:12]


def _fashion_mnist_local(d) -> Source:
  image_file, label_file = _fashion_mnist_files(d.local_dir, d.split)
  if not d.binarize and os.path.exists(os.path.join(d.local_dir, TWO_LEVEL_MARKER)):
    raise ValueError(
      f"data.local_dir={d.local_dir!r} holds a two-level copy of Fashion-MNIST (its "
      f"{TWO_LEVEL_MARKER} file; experiments/one_call_bundle.py), the same data as the original "
      "for data.binarize=True runs only: point data.local_dir at the original Fashion-MNIST "
      "files for this run, or set --config.data.binarize=True"
    )
  u_NHWC = read_idx(image_file)[..., None]
  labels_N = read_idx(label_file).astype(np.int32)
  return _image_source("fashion_mnist_local", u_NHWC, 255.0, d, labels_N)


def _own_images_path(d) -> str:
  if d.split != "train":
    raise ValueError(
      f"data.split={d.split!r}: data.name='images' has one split, 'train' (data.path holds it); "
      "to train on other images, point --config.data.path at them"
    )
  if not d.path:
    raise ValueError(
      "data.name='images' reads data.path: set --config.data.path to a .npy / .npz file of "
      "images (N, H, W[, C]) or to a folder of image files"
    )
  path = os.path.abspath(os.path.expanduser(d.path))
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"data.path={d.path!r} does not exist (data.name='images'). {sequences.MOVED_FIX}"
    )
  return path


def _image_files(folder: str) -> list[str]:
  """Image files under `folder` in `folders.files_under`'s order; other files are named in a
  warning."""
  files, skipped = folders.files_under(folder, lambda p: p.lower().endswith(IMAGE_SUFFIXES))
  folders.warn_skipped(folder, skipped, f"images ({', '.join(IMAGE_SUFFIXES)})")
  return files


EXIF_ORIENTATION = 0x0112  # EXIF tag: how a viewer turns the stored pixels (5-8: by 90 degrees)


def _read_image_folder(folder: str, max_bytes: int) -> np.ndarray:
  """Every image file under `folder` as one uint8 (N, H, W, C) array, C = 3 if any image is
  in colour, else 1, each turned upright as its EXIF orientation says (as viewers show camera
  photos). Sizes are checked from the headers before any pixel is decoded."""
  from PIL import Image, ImageOps

  files = _image_files(folder)
  if not files:
    raise ValueError(
      f"data.path={folder!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}, searched "
      "recursively)"
    )
  gray = {"1", "L", "LA"}
  colour, size0 = False, None
  for f in files:
    try:
      with Image.open(f) as im:
        size, mode, frames = im.size, im.mode, getattr(im, "n_frames", 1)
        palette = im.getpalette() if mode == "P" else None  # read with the header
        if im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # shown turned by 90 degrees
          size = size[::-1]
    except Exception as e:  # not an image after all, or a torn file
      raise ValueError(f"data.path: cannot read {f} as an image ({e}); remove or fix it") from e
    if frames > 1:  # an animation or a stack: one image per file is what is read
      raise ValueError(
        f"data.path: {f} holds {frames} frames (an animation or a stack); save each frame as "
        "its own file, or the images as one .npy array"
      )
    if mode.startswith(("I", "F")):  # 16/32-bit or float pixels: 8-bit conversion would clip
      raise ValueError(
        f"data.path: {f} has {mode} pixels (16-bit, 32-bit or float); convert the images to "
        "8 bits per channel first, or save them as a .npy array of floats in [0, 1]"
      )
    if size0 is None:
      size0 = size
    elif size != size0:
      raise ValueError(
        f"data.path={folder!r}: {f} is {size[1]}x{size[0]} (height x width, upright) but "
        f"{files[0]} is {size0[1]}x{size0[0]}; resize the images to one size first "
        "(data.image_size scales a folder whose images share one size; it does not make "
        "mixed sizes one)"
      )
    colour |= mode not in gray and not (palette is not None and _is_gray_palette(palette))
  c = 3 if colour else 1
  _check_fits_in_memory(folder, (len(files), size0[1], size0[0], c), max_bytes)
  out = np.empty((len(files), size0[1], size0[0], c), np.uint8)
  for i, f in enumerate(files):
    try:
      with Image.open(f) as im:
        transparent = _is_transparent(im)
        pixels = np.asarray(ImageOps.exif_transpose(im).convert("RGB" if colour else "L"))
    except (OSError, ValueError) as e:  # a truncated or damaged file
      raise ValueError(f"data.path: cannot decode {f} ({e}); remove or fix it") from e
    if transparent:  # dropping alpha would show whatever lies under it
      raise ValueError(
        f"data.path: {f} has transparent pixels (alpha < 255), and the model sees no alpha: "
        "flatten the images onto a background first (e.g. with PIL, Image.alpha_composite("
        "Image.new('RGBA', im.size, 'white'), im.convert('RGBA')).convert(m), m 'RGB' for "
        "colour images, 'L' for grayscale ones)"
      )
    out[i] = pixels.reshape(out.shape[1:])
  return out


def _is_transparent(im) -> bool:
  """Whether an image has an alpha band (or a palette / colour key marked transparent) that is
  below 255 anywhere; fully opaque RGBA / LA images are not."""
  if "A" not in im.getbands() and "transparency" not in im.info:
    return False
  return im.convert("RGBA").getchannel("A").getextrema()[0] < 255


def _is_gray_palette(palette: list[int]) -> bool:
  """A palette image is grayscale when every entry of its palette is a gray (r = g = b)."""
  rgb = np.asarray(palette).reshape(-1, 3)
  return bool((rgb == rgb[:, :1]).all())


def _check_fits_in_memory(path: str, shape: tuple[int, ...], max_bytes: int) -> None:
  need = int(np.prod(shape)) * 4
  if need > max_bytes:
    raise ValueError(
      f"data.path={path!r}: {shape[0]} images of {shape[1:]} need {need / 2**30:.1f} GiB as "
      f"float32, above the {max_bytes / 2**30:.0f} GiB that data.name='images' holds in memory; "
      "prepare them as a TFDS dataset (read lazily: data.name='tfds:<name>') or use fewer"
    )


def _npz_shape(z, key: str) -> tuple[int, ...]:
  """The shape of array `key` of an open .npz, from its header (nothing decompressed)."""
  with z.zip.open(f"{key}.npy") as member:
    major, _ = np.lib.format.read_magic(member)
    header = (
      np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    return tuple(header(member)[0])


_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zlib.error)  # torn, pickled, not numpy
_SAVE_FIX = "save the images with np.save(path, x) or np.savez(path, images=x)"


def _unreadable(path: str, e: Exception) -> ValueError:
  return ValueError(f"data.path={path!r}: not a readable numpy array file ({e}); {_SAVE_FIX}")


def _check_array_fits(path: str, shape: tuple[int, ...], max_bytes: int) -> None:
  if len(shape) in (3, 4):  # other ranks are refused by _as_nhwc
    _check_fits_in_memory(path, (*shape[:3], shape[3] if len(shape) == 4 else 1), max_bytes)


def _read_image_array(path: str, max_bytes: int) -> np.ndarray:
  """The array of a .npy file, or of a .npz file's 'images' key (or its only array); an array
  too large for memory is refused from its header, before it is read."""
  if path.lower().endswith(".npy"):
    with open(path, "rb") as f:
      if f.read(6) != b"\x93NUMPY":  # numpy would try it as a pickle and say so
        raise ValueError(
          f"data.path={path!r} is not a .npy file (it lacks numpy's header: another format, "
          f"or cut short); {_SAVE_FIX}"
        )
    try:
      x = np.load(path, mmap_mode="r", allow_pickle=False)  # nothing read yet
    except _READ_ERRORS as e:
      raise _unreadable(path, e) from e
    _check_array_fits(path, x.shape, max_bytes)
    return x
  if not path.lower().endswith(".npz"):
    raise ValueError(
      f"data.path={path!r}: data.name='images' reads a .npy or .npz file or a folder of images"
    )
  try:
    z = np.load(path, allow_pickle=False)
  except _READ_ERRORS as e:
    raise _unreadable(path, e) from e
  with z:
    keys = list(z.files)
    key = "images" if "images" in keys else (keys[0] if len(keys) == 1 else None)
    if key is None:
      raise ValueError(
        f"data.path={path!r} holds arrays {keys} and none is named 'images'; {_SAVE_FIX}"
      )
    try:
      shape = _npz_shape(z, key)
    except _READ_ERRORS as e:
      raise _unreadable(path, e) from e
    _check_array_fits(path, shape, max_bytes)
    try:
      return z[key]
    except _READ_ERRORS as e:
      raise _unreadable(path, e) from e


def _as_nhwc(x: np.ndarray, path: str) -> np.ndarray:
  if x.ndim == 3 and x.shape[-1] in (3, 4) and x.shape[1] != x.shape[2]:
    raise ValueError(
      f"data.path={path!r}: shape {x.shape} reads as {x.shape[0]} grayscale images of "
      f"{x.shape[1]}x{x.shape[2]}; if it is one {'RGB' if x.shape[-1] == 3 else 'RGBA'} image, "
      "save x[None] (N, H, W, C); several images need an array (N, H, W) or (N, H, W, C)"
    )
  if x.ndim == 3 and x.shape[0] in (3, 4) and min(x.shape[1:]) > 4:
    logging.warning(
      "data.path=%r: shape %s reads as %d grayscale images of %dx%d; if it is one %s image "
      "stored channel-first, save np.transpose(x, (1, 2, 0))[None] (N, H, W, C)",
      path, x.shape, x.shape[0], x.shape[1], x.shape[2], "RGB" if x.shape[0] == 3 else "RGBA",
    )  # fmt: skip
  if x.ndim == 3 and x.shape[0] == x.shape[1] < x.shape[2]:
    logging.warning(  # MATLAB and scipy.io.loadmat keep image stacks as (H, W, N)
      "data.path=%r: shape %s reads as %d grayscale images of %dx%d; if it is %d images of "
      "%dx%d stacked last (H, W, N), save np.moveaxis(x, -1, 0) (N, H, W)",
      path, x.shape, x.shape[0], x.shape[1], x.shape[2], x.shape[2], x.shape[0], x.shape[1],
    )  # fmt: skip
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(
      f"data.path={path!r}: images must be an array (N, H, W) or (N, H, W, C), got shape "
      f"{x.shape}{_flat_fix(x.shape)}"
    )
  if x.shape[-1] > 4 and x.shape[1] in (1, 3, 4):
    raise ValueError(
      f"data.path={path!r}: shape {x.shape} looks channel-first (N, C, H, W); images are "
      "channel-last: save np.transpose(x, (0, 2, 3, 1))"
    )
  if len(x) == 0:
    raise ValueError(f"data.path={path!r} holds no images (shape {x.shape})")
  if x.shape[-1] not in (1, 3):
    fix = {  # x[..., :3] kept both channels of gray + alpha
      2: "if they are gray and alpha, keep the gray channel with x[..., :1]",
      4: "if they are RGBA, drop the alpha with x[..., :3]",
    }.get(x.shape[-1], "keep one channel (x[..., :1]) or three (x[..., :3])")
    raise ValueError(
      f"data.path={path!r}: images of {x.shape[-1]} channels (shape {x.shape}); images are "
      f"grayscale (1) or RGB (3): {fix}"
    )
  return x


def _flat_fix(shape: tuple[int, ...]) -> str:
  """For a 2-D array: one grayscale image (x[None]), or rows of flattened square images (MNIST
  as 784 values, CIFAR-10's 3072 stored channel-first) and the reshape that makes them
  images; '' for other shapes."""
  if len(shape) != 2:
    return ""
  one = (
    f"; if it is one grayscale image of {shape[0]}x{shape[1]}, save x[None] (one image is "
    "too few to learn from: give many)"
  )
  rgb = shape[1] // 3 if shape[1] % 3 == 0 else 0
  s, s3 = (math.isqrt(n) if math.isqrt(n) ** 2 == n else 0 for n in (shape[1], rgb))
  hints = [f"x.reshape(-1, {s}, {s})" + (" if they are gray" if s3 else "")] if s else []
  if s3:
    hints.append(
      f"x.reshape(-1, 3, {s3}, {s3}).transpose(0, 2, 3, 1) if they are RGB stored channel-first "
      f"(CIFAR-10's layout; x.reshape(-1, {s3}, {s3}, 3) if channel-last)"
    )
  return one + ("; if rows of flattened images, save " + ", or ".join(hints) if hints else "")


def _pixel_range(x: np.ndarray, path: str) -> float:
  """The top of the pixel range [0, max] that maps onto [-scale, scale]."""
  if x.dtype == np.bool_:
    return 1.0
  if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
    raise ValueError(f"data.path={path!r}: images of dtype {x.dtype} are not pixel values")
  lo, hi = float(np.min(x)), float(np.max(x))
  if not (np.isfinite(lo) and np.isfinite(hi)):
    raise ValueError(f"data.path={path!r}: the images hold NaN or Inf")
  if lo == hi:
    raise ValueError(
      f"data.path={path!r}: every pixel of the {len(x)} images is {lo:g}: blank images, nothing "
      "to learn; check that the file holds the images you meant"
    )
  if np.issubdtype(x.dtype, np.integer) and lo >= 0 and hi <= 255:
    if hi <= 1:  # 0/1 masks: as 0..255 pixels they would be all but black
      raise ValueError(
        f"data.path={path!r}: {x.dtype} pixels span [{lo:g}, {hi:g}]; integer pixels are read "
        "as 0..255, so these images would train as almost black. Binary images: save an array "
        "as bool (or floats in [0, 1]), image files with pixels 0 and 255 (PIL mode '1' or 'L')"
      )
    if hi < LOW_INTEGER_MAX:  # e.g. 8x8 digits saved as ints 0..16: dim, near-constant data
      logging.warning(
        "data.path=%r: %s pixels span [%g, %g], but integer pixels are read as 0..255, so the "
        "images fill only [-1, %.3f] of [-1, 1] (at data.scale 1) and train as dark, nearly "
        "constant data. If %g is white, save x.astype(np.float32) / %g (floats in [0, 1]).",
        path, x.dtype, lo, hi, 2 * hi / 255 - 1, hi, hi,
      )  # fmt: skip
    return 255.0
  if np.issubdtype(x.dtype, np.floating) and lo >= 0 and hi <= 1:
    return 1.0
  want = "0..255" if np.issubdtype(x.dtype, np.integer) else "[0, 1]"
  span = f"[{x.dtype.type(lo)!s}, {x.dtype.type(hi)!s}]"  # every digit: 1.0000001 is not 1
  raise ValueError(
    f"data.path={path!r}: {x.dtype} pixel values span {span}, outside {want}; "
    + _range_fix(x.dtype, lo, hi)
  )


def _range_fix(dtype: np.dtype, lo: float, hi: float) -> str:
  """How to save pixels outside 0..255 / [0, 1]: the fix for the usual cause of the range."""
  floats = "as floats in [0, 1]"
  if np.issubdtype(dtype, np.integer) and 0 <= lo and hi <= 65535:
    return f"if they are 16-bit, save x.astype(np.float32) / 65535 ({floats})"
  if np.issubdtype(dtype, np.floating) and -1 <= lo < -0.5 and hi <= 1:  # diffusion's [-1, 1]
    return f"if they are in [-1, 1], save (x + 1) / 2 ({floats})"
  if np.issubdtype(dtype, np.floating) and -0.1 <= lo and hi <= 1.1:  # a resize's overshoot
    return "if a resize (bicubic, Lanczos) or rounding moved them past it, save np.clip(x, 0, 1)"
  if np.issubdtype(dtype, np.floating) and 0 <= lo and hi <= 255:
    return f"if 255 is white, save x / 255 ({floats})"
  return "store uint8 pixels 0..255 (or floats in [0, 1])"


def own_images_source(d, max_bytes: int = MAX_IN_MEMORY_BYTES) -> Source:
  """data.name='images': the user's own images at data.path (module docstring), in memory."""
  path = _own_images_path(d)
  if os.path.isdir(path):
    u_NHWC = _read_image_folder(path, max_bytes)
  else:
    u_NHWC = _as_nhwc(_read_image_array(path, max_bytes), path)
  max_value = _pixel_range(u_NHWC, path)
  return _image_source(f"images ({path})", u_NHWC, max_value, d)


def _own_image_files(path: str) -> tuple[str, list[str]]:
  """(data.path made absolute, the image files the source reads there: the file itself, or
  a folder's image files in reading order; it has warned about the others)."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    return path, [path]
  return path, folders.files_under(path, lambda p: p.lower().endswith(IMAGE_SUFFIXES))[0]


def own_images_fingerprint(path: str) -> str:
  """A short hash of what data.path holds by name, size and modification time (a file, or
  every image file of a folder): the FID reference cache's name for data.name='images'."""
  path, files = _own_image_files(path)
  h = hashlib.sha256(path.encode())
  for f in files:
    st = os.stat(f)
    h.update(f"{os.path.relpath(f, path)}|{st.st_size}|{st.st_mtime_ns}".encode())
  return h.hexdigest()[:12]


SAMPLES_DATA_KEY = "__data__"  # saved samples' .npz: data_identity as a JSON string


def samples_data_record(npz) -> dict | None:
  """The data record (`data_identity`) of a saved samples file opened with np.load; None for
  a file written before it was recorded."""
  return json.loads(str(npz[SAMPLES_DATA_KEY][()])) if SAMPLES_DATA_KEY in npz.files else None


def own_images_listing(path: str) -> str:
  """A short hash of what data.path holds by relative name and size alone (no folder, no
  modification time, unlike own_images_fingerprint): the same images copied to another folder
  or machine keep it, so saved samples can be matched to their data there."""
  (path, files), h = _own_image_files(path), hashlib.sha256()
  for f in files:
    name = os.path.relpath(f, path) if f != path else os.path.basename(f)
    h.update(f"{name}|{os.path.getsize(f)}".encode())
  return h.hexdigest()[:12]


def reference_digest(d) -> str | None:
  """The digest the FID reference caches name data config `d`'s images by, for data read from
  a place the user chooses: fashion_mnist_fingerprint of data.local_dir, own_images_fingerprint
  of data.path, tfds_dir_fingerprint of data.tfds_data_dir; None for built-in data (digits,
  synthetic sets), which cannot differ between machines."""
  if d.name == "fashion_mnist_local":
    return fashion_mnist_fingerprint(d.local_dir)
  if tfds_set(d.name):
    return tfds_dir_fingerprint(d.tfds_data_dir)
  if d.name == OWN_IMAGES:
    return own_images_fingerprint(d.path)
  return None


def data_identity(d) -> dict:
  """What identifies the data a config trains on, as saved samples record it for FID
  elsewhere (experiments/fid_of_samples.py checks it against its reference): data.name,
  binarized or not, data.image_size (`image_size`, 0: native; older records lack it), and
  for the data the FID tools have a reference for, the reference cache's digest
  (`reference_data`: fashion_mnist_fingerprint of data.local_dir, own_images_fingerprint of
  data.path, which also get own_images_listing as `listing`; tfds_dir_fingerprint of
  data.tfds_data_dir for a tfds set, with its image feature as `image_key` when not 'image')
  and where it was read (`where`, for messages)."""
  rec = {"data": d.name, "binarized": bool(d.get("binarize", False))}
  rec |= {"reference_data": reference_digest(d), "image_size": int(d.get("image_size", 0) or 0)}
  if d.name == "fashion_mnist_local":
    rec["where"] = d.local_dir
  elif tfds_set(d.name):
    rec["where"] = d.tfds_data_dir
    if d.get("image_key", "image") != "image":
      rec["image_key"] = d.image_key
  elif d.name == OWN_IMAGES:
    rec |= {"where": d.path, "listing": own_images_listing(d.path)}
  return rec


def same_data(a: dict, b: dict) -> bool:
  """Two data records (`data_identity`) name the same data: name, binarization, image size
  (where both record it: records before 2026-12-06 evening lack it), a tfds set's image feature
  and digest (own images: or their names and sizes, which a copy elsewhere keeps); where they
  were read may differ."""
  if (a.get("data"), a.get("binarized")) != (b.get("data"), b.get("binarized")):
    return False
  if "image_size" in a and "image_size" in b and a["image_size"] != b["image_size"]:
    return False  # the same files resized otherwise: other images
  if a.get("image_key", "image") != b.get("image_key", "image"):
    return False  # another image feature of one tfds set
  listing = a.get("listing")
  return a.get("reference_data") == b.get("reference_data") or (
    listing is not None and listing == b.get("listing")
  )


def _prepare_command(name: str, data_dir: str) -> str:
  return (
    'python -c "import tensorflow_datasets as tfds; '
    f"tfds.builder('{name}', data_dir='{data_dir}', file_format='array_record')"
    '.download_and_prepare()"'
  )


def _open_tfds(name: str, d):
  """(builder, data source) for a prepared tfds dataset, or a clear error. Never downloads."""
  import tensorflow_datasets as tfds

  data_dir = d.tfds_data_dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"data.name='tfds:{name}': tfds has no dataset {name!r}") from e
  try:
    return builder, builder.as_data_source(split=d.split)
  except Exception as e:
    if builder.is_prepared():
      raise ValueError(
        f"data.name='tfds:{name}', data.split={d.split!r}: cannot open for random access "
        f"({e}). Splits: {list(builder.info.splits)}. It must be prepared in array_record "
        f"format: {_prepare_command(name, data_dir or tfds.core.constants.DATA_DIR)}"
      ) from e
    shown_dir = data_dir or tfds.core.constants.DATA_DIR
    raise FileNotFoundError(
      f"tfds dataset {name!r} is not prepared in data_dir {shown_dir!r} "
      "(data.tfds_data_dir). Training never downloads data. On a machine with internet "
      f"run:\n  {_prepare_command(name, shown_dir)}\nthen copy that directory here and set "
      "--config.data.tfds_data_dir to it."
    ) from e


class _TfdsReader:
  """indices -> float images of a prepared tfds dataset, by random access without TensorFlow.

  Picklable: a copy sent to a data worker process reopens the dataset there on first use.
  """

  def __init__(self, name: str, data_config: dict, label: str | None, ds=None):
    self.name, self.data_config, self.label, self._ds = name, data_config, label, ds

  def __getstate__(self) -> dict:
    return {**self.__dict__, "_ds": None}

  def _source(self):
    if self._ds is None:
      self._ds = _open_tfds(self.name, ml_collections.ConfigDict(self.data_config))[1]
    return self._ds

  def read_labelled(self, indices_B: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    d, ds = self.data_config, self._source()
    # Random access, decoded without TensorFlow; one batched read (2.5x faster than one
    # example at a time on Fashion-MNIST, BENCHMARKS.md).
    keys = [int(i) for i in indices_B]
    try:
      examples = ds.__getitems__(keys)
    except TypeError:  # tfds.testing.mock_data's sources have no batched read
      examples = [ds[i] for i in keys]
    u_BHWC = np.stack([ex[d["image_key"]] for ex in examples])
    x = images_to_float(u_BHWC, 255.0, d["image_size"], d["binarize"], d["scale"])
    labels = np.array([ex[self.label] for ex in examples], np.int32) if self.label else None
    return x, labels

  def __call__(self, indices_B: np.ndarray) -> np.ndarray:
    return self.read_labelled(indices_B)[0]


def tfds_source(name: str, d, in_memory: bool | None = None) -> Source:
  """A tfds image dataset by random access; `in_memory=None` decides by MAX_IN_MEMORY_BYTES."""
  import tensorflow_datasets as tfds

  builder, ds = _open_tfds(name, d)
  features = builder.info.features
  feature = features[d.image_key] if d.image_key in features else None
  if not isinstance(feature, tfds.features.Image) or feature.np_dtype != np.uint8:
    raise ValueError(
      f"data.image_key={d.image_key!r} is not a uint8 image feature of tfds:{name}; "
      f"features: {list(features)}"
    )
  label = "label" if "label" in features else None
  shape = check_image_shape(f"tfds:{name}", tuple(feature.shape), d.image_size)
  n = len(ds)

  reader = _TfdsReader(name, d.to_dict(), label, ds)
  read_labelled, read = reader.read_labelled, reader

  if in_memory is None:
    in_memory = n * int(np.prod(shape)) * 4 <= MAX_IN_MEMORY_BYTES
  if not in_memory:
    return Source(f"tfds:{name}", shape, n, True, d.scale, d.binarize, reader=read)
  x = np.empty((n, *shape), np.float32)
  labels = np.empty((n,), np.int32) if label else None
  for start in range(0, n, 1024):
    chunk = slice(start, min(start + 1024, n))
    x[chunk], y = read_labelled(np.arange(chunk.start, chunk.stop))
    if label:
      labels[chunk] = y
  return Source(f"tfds:{name}", shape, n, True, d.scale, d.binarize, x, None, labels)


def _check_token_keys(d) -> None:
  def require(ok: bool, key: str, why: str) -> None:
    if not ok:
      raise ValueError(f"data.{key}={d[key]!r}: {why}")

  require(d.split in sequences.SPLITS, "split", f"token data splits: {', '.join(sequences.SPLITS)}")
  require(d.seq_len >= 1, "seq_len", "the window length must be >= 1 token")
  require(d.window_stride >= 0, "window_stride", "must be >= 0 (0 = seq_len, non-overlapping)")
  require(0 < d.val_fraction < 1, "val_fraction", "the held-out fraction must be in (0, 1)")
  require(
    d.unknown_policy in sequences.UNKNOWN_POLICIES,
    "unknown_policy",
    f"must be one of {', '.join(sequences.UNKNOWN_POLICIES)}",
  )
  require(not d.image_size, "image_size", "images only; use 0 for token data")
  require(not d.binarize, "binarize", "images only; use False for token data")
  require(not d.random_flip, "random_flip", "images only; use False for token data")
  require(
    d.name != "dna" or d.vocab == d.vocab.upper(),
    "vocab",
    f"DNA is read in upper case (soft-masked lower-case bases too): use {d.vocab.upper()!r}",
  )
  unreadable = sorted({c for c in d.vocab if not (c.isalpha() or c in "-.*")})
  require(  # the reader strips blanks and reads letters and the gap / stop marks -.* only
    # (a vocabulary that repeats a symbol is named as such by token_encoding: '\nACGT' typed)
    d.name != "dna" or not unreadable or len(set(d.vocab)) < len(d.vocab),
    "vocab",
    f"a DNA sequence holds letters and the marks - . * only, so {unreadable} never occur in "
    f"the data yet would be symbols the samples can spell: drop them "
    f"(--config.data.vocab={''.join(c for c in d.vocab if c not in unreadable)})",
  )


def token_encoding(d, groups_train: list[tuple[str, str]] | None = None) -> TokenEncoding:
  """The run's encoding: data.vocab if set, else ACGT (dna) or the training split's letters."""
  vocab = d.vocab or ("ACGT" if d.name == "dna" else sequences.text_vocab(groups_train or []))
  repeated = sorted({ch for ch in vocab if vocab.count(ch) > 1})
  if repeated:
    raise ValueError(
      f"data.vocab={vocab!r} lists {', '.join(map(repr, repeated))} more than once: each symbol "
      "is one token, so give each once (a literal backslash-n is the two symbols '\\' and 'n'; "
      "a config file can hold a newline in the string)"
    )
  if len(vocab) < 2:
    raise ValueError(
      f"data.vocab={d.vocab!r} gives the vocabulary {vocab!r} (data.path={d.path!r}): it needs "
      "at least 2 distinct symbols; set --config.data.vocab to the symbols to model, or point "
      "data.path at non-empty data"
    )
  return TokenEncoding(vocab, float(d.scale))


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedWindows:
  """A token source's reader: window indices -> encoded (B, L, V) float32 (picklable)."""

  encoding: TokenEncoding
  ids_NL: np.ndarray

  def __call__(self, indices_B: np.ndarray) -> np.ndarray:
    return self.encoding.encode(self.ids_NL[indices_B])


def _tail_note(d, groups) -> str:
  """How a lone text file's split came to be shorter than the file: its held-out tail is cut
  off (docs/sequences.md), so 'longest sequence' is a part of the file."""
  if d.name != "text" or len(groups) != 1 or not os.path.isfile(d.path):
    return ""
  part = "the file less its held-out tail" if d.split == "train" else "the file's held-out tail"
  return f", {part} (data.val_fraction={d.val_fraction:g})"


def _no_window_message(d, groups, stats, encoding) -> str:
  """Why a split has no window, with the fixes that apply: a longer window when every held-out
  window equalled a training window (short windows repeat), else a shorter one; the held-out
  fraction (or more files) for the test split, whose sequences it names; and, only when some
  sequence is as long as a window and none was dropped as a training window's, the vocabulary
  when most letters are outside it (another alphabet, e.g. protein for dna) or the
  unknown-letter policy when a few are."""
  longest = max(len(s) for _, s in groups)
  fixes, held = [], ""
  if stats.duplicate_windows:  # windows were cut, and every one was a training window's
    fixes.append(
      f"a longer --config.data.seq_len (all {stats.duplicate_windows} held-out windows equal "
      "training windows, and those are dropped so that no held-out window was trained on; "
      "text that repeats itself, e.g. one phrase over and over, stays so at any length: then "
      "only other data helps)"
    )
  if d.split == "test":
    named = ", ".join(f"{n!r} {len(q)} letters" for n, q in groups[:5])
    more = f" and {len(groups) - 5} more" if len(groups) > 5 else ""
    held = f"held out{f' from data.path={d.path!r}' if d.path else ''}: {named}{more}; "
    fixes.append(
      f"a larger --config.data.val_fraction (now {d.val_fraction:g}: the share of the "
      "sequences / works held out as this split) or more files in data.path"
    )
  if not stats.duplicate_windows:
    fixes.append("a shorter --config.data.seq_len")
  # a letter setting gives no window to sequences shorter than one, nor a held-out one to them
  letters_matter = longest >= d.seq_len and not stats.duplicate_windows
  if letters_matter and stats.unknown_letters > 0.1 * max(stats.letters, 1):
    fixes.append(
      f"--config.data.vocab set to the data's own letters ({stats.unknown_letters} of "
      f"{stats.letters} letters are outside the vocabulary {encoding.vocab[:40]!r})"
    )
  elif letters_matter and stats.unknown_letters and d.unknown_policy == "drop":
    fixes.append("--config.data.unknown_policy=replace")
  return (
    f"data.seq_len={d.seq_len} leaves no window in the {d.split!r} split of {d.name!r} "
    f"({held}its longest sequence {longest} letters{_tail_note(d, groups)}, "
    f"{stats.unknown_letters} unknown letters with "
    f"data.unknown_policy={d.unknown_policy!r}, {stats.duplicate_windows} windows equal to "
    f"training windows); use {', or '.join(fixes)}"
  )


def foreign_letters_message(d, stats: sequences.SplitStats, vocab: str) -> str | None:
  """Why DNA data whose letters are mostly outside the vocabulary (RNA's U, protein) is refused,
  with the data.vocab that models it; None for nucleotides (ambiguity codes, N runs, gaps and
  masks are the unknown_policy's). Read on, such data trained silently on the few windows
  that happened to avoid the other letters."""
  foreign = [(c, n) for c, n in stats.letter_counts if c not in vocab + sequences.NUCLEOTIDE_EXTRAS]
  total = sum(n for _, n in foreign)
  if total <= sequences.MAX_FOREIGN_SHARE * max(stats.letters, 1):
    return None
  own = "".join(sorted(c for c, _ in stats.letter_counts if c.isprintable() and c != " "))
  shown = ", ".join(f"{c!r} {n}" for c, n in foreign[:8]) + (", ..." if len(foreign) > 8 else "")
  letters = {c for c, _ in stats.letter_counts}
  if letters & set(sequences.PROTEIN_ONLY):
    kind = "These look like protein sequences (amino acids such as E, F, I, L, P, Q are no "
    kind += "nucleotide codes): data.name='dna' models nucleotides; to model these letters as "
    kind += f"tokens anyway set --config.data.vocab={own}"
  elif "U" in letters and "T" not in letters:
    kind = "This reads as RNA (U, no T): set --config.data.vocab=ACGU (samples then spell U)"
  else:
    kind = f"Set --config.data.vocab to the letters to model, e.g. --config.data.vocab={own}"
  return (
    f"data.path={d.path!r}: {total} of the {stats.letters} letters of the {d.split!r} split "
    f"({100 * total / stats.letters:.0f}%) are outside the vocabulary {vocab!r} and are no "
    f"nucleotide ambiguity code, gap or mask: {shown}. {kind}"
  )


def physical_memory_bytes() -> int | None:
  """This machine's memory (None where the OS does not say)."""
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return None


MAX_WINDOWS_MEMORY_SHARE = 0.75  # of the machine's memory that cut windows may take


def _check_windows_fit(d, parts: list[list[tuple[str, str]]]) -> None:
  """Windows are held in memory as int32 token ids, a copy of every letter per window that
  covers it: overlapping windows (a small data.window_stride) multiply the data by
  seq_len / stride. Refused before cutting when they would not fit, instead of the OS killing
  the process partway."""
  stride = d.window_stride or d.seq_len
  windows = sum(max(0, (len(seq) - d.seq_len) // stride + 1) for part in parts for _, seq in part)
  need, have = windows * d.seq_len * 4, physical_memory_bytes()
  if have and need > MAX_WINDOWS_MEMORY_SHARE * have:
    letters = sum(len(seq) for part in parts for _, seq in part)
    raise ValueError(
      f"data.path={d.path!r}: {letters:,} letters cut into {windows:,} windows of "
      f"data.seq_len={d.seq_len} every data.window_stride={stride} letters need "
      f"{need / 2**30:.1f} GiB as token ids, above {MAX_WINDOWS_MEMORY_SHARE:.0%} of this "
      f"machine's {have / 2**30:.1f} GiB; use a larger --config.data.window_stride (0 = "
      "seq_len, non-overlapping, one copy of the data) or a part of the data"
    )


DROPPED_WINDOWS_WARNING = 0.25  # share of a split's windows lost to unknown letters; warned above


def token_source(d) -> Source:
  """Windows of one split of a token source (module docstring of data/sequences.py)."""
  _check_token_keys(d)
  groups = (sequences.dna_groups if d.name == "dna" else sequences.text_groups)(d.path)
  splits = sequences.split_groups(groups, d.val_fraction)
  encoding = token_encoding(d, splits["train"])
  stride = d.window_stride or d.seq_len
  _check_windows_fit(d, [splits[d.split], *([splits["train"]] if d.split == "test" else [])])
  cut = lambda split: sequences.cut_windows(
    splits[split], encoding, d.seq_len, stride, d.unknown_policy
  )
  ids_NL, stats = cut(d.split)
  stats = dataclasses.replace(
    stats,
    held_out_digest=sequences.split_digest(splits["test"]),
    train_digest=sequences.split_digest(splits["train"]),
  )
  foreign = foreign_letters_message(d, stats, encoding.vocab) if d.name == "dna" else None
  if foreign:
    raise ValueError(foreign)
  lost = stats.dropped_windows / max(stats.dropped_windows + len(ids_NL), 1)
  if d.unknown_policy == "drop" and lost > DROPPED_WINDOWS_WARNING:  # said, not only counted
    unknown = [(c, n) for c, n in stats.letter_counts if c not in encoding.vocab]
    shown = ", ".join(f"{c!r} {n}" for c, n in unknown[:6]) + (", ..." if len(unknown) > 6 else "")
    logging.warning(
      "data.path=%r: %d of the %d windows of the %r split (%.0f%%) are dropped for letters "
      "outside the vocabulary %r (%s); keep them with --config.data.unknown_policy=replace, or "
      "model those letters by adding them to --config.data.vocab",
      d.path, stats.dropped_windows, stats.dropped_windows + len(ids_NL), d.split,
      100 * lost, encoding.vocab, shown,
    )  # fmt: skip
  if d.split == "test":  # no held-out window equals a training window
    ids_NL, dup = sequences.drop_seen(ids_NL, cut("train")[0])
    stats = dataclasses.replace(stats, windows=len(ids_NL), duplicate_windows=dup)
  if len(ids_NL) == 0:
    raise ValueError(_no_window_message(d, splits[d.split], stats, encoding))
  shape = (d.seq_len, encoding.size)
  reader = EncodedWindows(encoding, ids_NL)
  return Source(
    d.name, shape, len(ids_NL), False, d.scale, reader=reader,
    encoding=encoding, token_ids=ids_NL, stats=stats,
  )  # fmt: skip
