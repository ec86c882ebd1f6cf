"""FID of a model's samples against the reference statistics of its training data.

Used by the evaluate command and by the trainer's periodic FID (train.fid_every); both hand
in the samples as an iterator of batches (in the data's range [-data.scale, data.scale]),
so this module knows nothing of how they were drawn. Data and samples are both quantized
with `images.to_uint8` on that range, so a model that reproduces the data exactly scores
FID ~ 0 whatever the scale (binarized data at scale 0.5 becomes black and white images).

Reference statistics come from `fid.ref_stats` (an .npz with mu, sigma, n) or are computed
from the run's training data and cached as `<fid.cache_dir>/<reference_name(config)>.npz`.
"""

import math
from collections.abc import Iterable, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging

from infonoise_jax.data import Source, load_source
from infonoise_jax.data.sources import reference_digest, tfds_set
from infonoise_jax.evaluation import fid, images, inception


def reference_name(config: ml_collections.ConfigDict) -> str:
  """Cache name identifying the reference images: dataset (and a tfds set's image feature, where
  not 'image'), train split, size, binarization; for data read from files the user chooses
  (data.name='images', 'fashion_mnist_local'), also a digest of those files, and for a tfds set
  a digest of the resolved folder it is read from (data.tfds_data_dir)."""
  d = config.data
  digest = reference_digest(d)  # the files (or tfds folder) the data is read from, if chosen
  name = f"{d.name}_{digest}_train" if digest else f"{d.name}_train"
  if tfds_set(d.name) and d.image_key != "image":  # another feature of the set
    name += f"_{d.image_key}"
  if d.image_size:
    name += f"_{d.image_size}px"
  return name + ("_binarized" if d.binarize else "")


def check_images(shape: tuple[int, ...], what: str) -> None:
  if len(shape) != 3 or shape[-1] not in (1, 3):
    raise ValueError(
      f"FID needs images of shape (H, W, 1 or 3); {what} has examples {shape}. Token data (dna, "
      "text) is scored with its domain metrics instead: --config.train.eval_every=N during "
      "training, python -m infonoise_jax.evaluate on a checkpoint (docs/sequences.md)"
    )


def source_batches(source: Source, batch_size: int) -> Iterator[np.ndarray]:
  """Every example of `source`, in order, as uint8 image batches."""
  for start in range(0, source.num_examples, batch_size):
    idx = np.arange(start, min(start + batch_size, source.num_examples))
    x = source.array[idx] if source.array is not None else source.get(idx)
    yield images.to_uint8(x, (-source.scale, source.scale))


def global_features(extractor: fid.FeatureFn) -> fid.FeatureFn:
  """Features of a batch every process holds in full (each feeds its share to the extractor).

  `fid.make_feature_extractor` takes host-local images and returns the features of all
  processes' images; here each process passes its slice (padded to equal size) and the
  padding rows are dropped, so the result is the features of the whole batch, in order.
  """
  n_proc, pid = jax.process_count(), jax.process_index()
  if n_proc == 1:
    return extractor

  def extract(images_NHWC: np.ndarray) -> np.ndarray:
    n = images_NHWC.shape[0]
    per = math.ceil(n / n_proc)
    local = images_NHWC[min(pid * per, n) : (pid + 1) * per]
    local = np.concatenate([local, np.zeros((per - len(local), *local.shape[1:]), local.dtype)])
    f_PND = extractor(local).reshape(n_proc, per, -1)
    return np.concatenate([f_PND[p, : max(0, min(per, n - p * per))] for p in range(n_proc)])

  return extract


def make_extractor(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, weights_path: str | None = None
) -> fid.FeatureFn:
  """Inception features of global uint8 batches, sharded over `mesh` (fid.weights_path).

  Missing weights raise inception.load_params' FileNotFoundError, which says how to get them.
  """
  params = inception.load_params(weights_path or config.fid.weights_path)
  extractor = fid.make_feature_extractor(params, mesh, "data", config.fid.batch_size)
  return global_features(extractor)


def reference_source(config: ml_collections.ConfigDict, source: Source | None = None) -> Source:
  """The images FID's reference statistics are computed from: `source`, else the run's train
  split (loaded here), checked to be images, at least 2 of them (a covariance), before any
  Inception weights are loaded."""
  if source is None:
    train_config = config.copy_and_resolve_references()
    train_config.data.split = "train"
    source = load_source(train_config)
  check_images(source.shape, source.name)
  if source.num_examples < 2:
    raise ValueError(
      f"FID's reference is {source.describe()}: {source.num_examples} image, and a Frechet "
      "distance needs at least 2 (a covariance; thousands for a meaningful one). Point the "
      "data at more images, give reference statistics (fid.ref_stats, or evaluate's "
      "--ref_stats), or leave FID out (train.fid_every=0)"
    )
  return source


def load_reference(
  config: ml_collections.ConfigDict,
  extractor: fid.FeatureFn,
  ref_stats: str | None = None,
  source: Source | None = None,
) -> tuple[fid.Stats, str]:
  """(reference stats, where they came from): `ref_stats` or fid.ref_stats, else the cache.

  On a cache miss the statistics of the run's train split (or of `source`) are computed
  with `extractor` and saved under fid.cache_dir.
  """
  path = ref_stats or config.fid.ref_stats
  if path:
    return fid.load_stats(path), path  # not statistics of Inception features: named
  source = reference_source(config, source)
  name = reference_name(config)
  where = fid.reference_stats_path(config.fid.cache_dir, name)
  logging.info("FID reference statistics of %s: %s", source.describe(), where)
  batches = lambda: source_batches(source, config.fid.batch_size)
  return fid.reference_stats(name, batches, extractor, config.fid.cache_dir), where


def fid_of_batches(
  batches: Iterable[np.ndarray], scale: float, ref: fid.Stats, extractor: fid.FeatureFn
) -> float:
  """FID of the samples in `batches` (floats in [-scale, scale], NHWC) against `ref`.
  Samples with nan or inf pixels are scored as images.to_uint8 quantizes them (nan mid-grey,
  inf the range's ends) and counted in a warning: a model or sampler that diverged shows as a
  large FID and a named count, not as a number alone."""
  acc, bad = fid.init_stats(), 0
  for x in batches:
    x = np.asarray(x)
    if x.dtype != np.uint8:
      bad += int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
    acc = fid.update_stats(acc, extractor(images.to_uint8(x, (-scale, scale))))
  if acc.n < 2:
    raise ValueError(f"FID needs at least 2 samples, got {acc.n}")
  if bad:
    logging.warning(
      "FID: %d of %d samples had nan or inf pixels (quantized as mid-grey or the range's ends "
      "and scored so): the model or the sampler diverged",
      bad,
      acc.n,
    )
  return fid.frechet_distance(fid.finalize_stats(acc), ref)


SMALL_SET = 10_000  # below this many samples per FID, its bias upwards is noted


def fid_notes(num: int, ref_n: int, flag: str) -> list[str]:
  """What to know before reading an FID of `num` samples (the count `flag` sets) against
  statistics of `ref_n` images: a singular reference covariance, and the small-n bias."""
  notes = []
  if ref_n <= inception.FEATURE_DIM:
    notes.append(
      f"the reference statistics come from {ref_n} images, not more than the "
      f"{inception.FEATURE_DIM} Inception features, so their covariance is singular and "
      "this FID reflects the reference set's size as much as the model: compare FIDs only "
      "against the same reference"
    )
  if num < SMALL_SET:
    notes.append(
      f"FID is biased upwards at small sample counts ({num} per FID here, 50000 in EDM's "
      f"protocol): compare FIDs only at equal {flag}"
    )
  return notes


class PeriodicFID:
  """The trainer's FID (train.fid_every): model samples vs the training data's statistics.

  Built once before the loop, so missing weights or a non-image dataset fail before
  training starts; the reference statistics are computed (or read from the cache) here.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
    source: Source,
    extractor: fid.FeatureFn | None = None,
  ):
    check_images(source.shape, source.name)
    if config.train.fid_num_samples < 2:
      raise ValueError(f"train.fid_num_samples must be >= 2, got {config.train.fid_num_samples}")
    self.num = int(config.train.fid_num_samples)
    self.scale = float(config.data.scale)
    train_source = source if config.data.split == "train" else None  # else: load train
    if not config.fid.ref_stats:  # too few images: said before the weights are loaded
      train_source = reference_source(config, train_source)
    self.extractor = extractor or make_extractor(config, mesh)
    self.ref, self.ref_path = load_reference(config, self.extractor, source=train_source)
    for note in fid_notes(self.num, self.ref.n, "train.fid_num_samples"):
      logging.warning("train.fid_every: %s", note)

  def __call__(self, batches: Iterable[np.ndarray]) -> float:
    """FID of the `self.num` samples in `batches`."""
    return fid_of_batches(batches, self.scale, self.ref, self.extractor)

  def write(self, batches: Iterable[np.ndarray], writer, step: int) -> float:
    """Computes FID, writes the scalar "fid" at `step` and logs it."""
    value = self(batches)
    writer.write_scalars(step, {"fid": value})
    logging.info("step %d: FID %.4f (%d samples vs %s)", step, value, self.num, self.ref_path)
    return value
