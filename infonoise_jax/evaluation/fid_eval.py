"""FID of a trained model: reference statistics of a data source and FID of the EMA sampler.

Glue between the data sources, the sampler (infonoise_jax/sample.py) and fid.py, used by the
evaluate command and by the trainer's periodic FID (train.fid_every). Data and samples are
both divided by data.scale and then quantized with EDM's `fid.to_uint8`, so a model that
reproduces the data exactly scores FID ~ 0 whatever the scale (binarized data at scale 0.5
becomes black and white images, not grey ones).

Reference statistics come from `fid.ref_stats` (an .npz with mu, sigma, n) or are computed
from the run's training data and cached as `<fid.cache_dir>/<reference_name(config)>.npz`.
FID of seed set s scores samples 0..num-1 of `sample.draw(..., seed=s)`: the very samples
`python -m infonoise_jax.sample --seed=s` writes.
"""

import math
from collections.abc import Callable, Iterator, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from infonoise_jax import sample
from infonoise_jax.data import Source, load_source
from infonoise_jax.evaluation import fid, inception


def reference_name(config: ml_collections.ConfigDict) -> str:
  """Cache name identifying the reference images: dataset, train split, size, binarization."""
  d = config.data
  name = f"{d.name}_train"
  if d.image_size:
    name += f"_{d.image_size}px"
  return name + ("_binarized" if d.binarize else "")


def to_images(x_NHWC: np.ndarray, scale: float) -> np.ndarray:
  """Data or samples in [-scale, scale] -> uint8 images (EDM's quantization of x / scale)."""
  return fid.to_uint8(np.asarray(x_NHWC, np.float32) / np.float32(scale))


def _check_images(shape: tuple[int, ...], what: str) -> None:
  if len(shape) != 3 or shape[-1] not in (1, 3):
    raise ValueError(f"FID needs images of shape (H, W, 1 or 3); {what} has examples {shape}")


def source_batches(source: Source, batch_size: int) -> Iterator[np.ndarray]:
  """Every example of `source`, in order, as uint8 image batches."""
  for start in range(0, source.num_examples, batch_size):
    idx = np.arange(start, min(start + batch_size, source.num_examples))
    x = source.array[idx] if source.array is not None else source.get(idx)
    yield to_images(x, source.scale)


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
    return fid.load_stats(path), path
  if source is None:
    train_config = config.copy_and_resolve_references()
    train_config.data.split = "train"
    source = load_source(train_config)
  _check_images(source.shape, source.name)
  name = reference_name(config)
  where = fid.reference_stats_path(config.fid.cache_dir, name)
  logging.info("FID reference statistics of %s: %s", source.describe(), where)
  batches = lambda: source_batches(source, config.fid.batch_size)
  return fid.reference_stats(name, batches, extractor, config.fid.cache_dir), where


def model_fid(
  sampler: sample.Sampler,
  params,
  sigmas: jax.Array,
  ref: fid.Stats,
  extractor: fid.FeatureFn,
  num: int,
  seeds: Sequence[int] = (0,),
  batch: int | None = None,
  report: Callable[[str], None] | None = None,
) -> dict[str, float | list[float]]:
  """FID of `num` samples per seed set (EDM protocol: 50k, seeds 0, 1, 2, report the min).

  `report(line)`, if given, is called with a progress line after each seed set.
  """
  _check_images(sampler.data_shape, "the model")
  if num < 2:
    raise ValueError(f"FID needs at least 2 samples, got num={num}")
  scale, fids = sampler.config.data.scale, []
  for seed in seeds:
    acc = fid.init_stats()
    for x in sample.draw(sampler, params, sigmas, num, seed, batch):
      acc = fid.update_stats(acc, extractor(to_images(x, scale)))
    fids.append(fid.frechet_distance(fid.finalize_stats(acc), ref))
    if report is not None:
      report(f"seed set {seed}: FID {fids[-1]:.4f} ({num} samples)")
  return {"fid": min(fids), "fids": fids}


class PeriodicFID:
  """The trainer's FID (train.fid_every): EMA samples of a `train.Run` vs the data's stats.

  Built once before the loop, so missing weights or a non-image dataset fail before
  training starts; the reference statistics are computed (or read from the cache) here.
  Every call scores train.fid_num_samples samples of seed set 0 (the same noise each time).
  """

  def __init__(self, run, extractor: fid.FeatureFn | None = None):
    self.sampler = sample.Sampler.from_run(run)
    _check_images(self.sampler.data_shape, run.source.name)
    if run.config.train.fid_num_samples < 2:
      raise ValueError(
        f"train.fid_num_samples must be >= 2, got {run.config.train.fid_num_samples}"
      )
    self.extractor = extractor or make_extractor(run.config, run.mesh)
    source = run.source if run.config.data.split == "train" else None  # else: load train
    self.ref, self.ref_path = load_reference(run.config, self.extractor, source=source)

  def __call__(self, state) -> float:
    sigmas = sample.make_sigmas(self.sampler, state.schedule_state)
    num = self.sampler.config.train.fid_num_samples
    out = model_fid(self.sampler, state.ema_params, sigmas, self.ref, self.extractor, num)
    return float(out["fid"])

  def write(self, state, writer, step: int) -> float:
    """Computes FID, writes the scalar "fid" at `step` and logs it."""
    value = self(state)
    writer.write_scalars(step, {"fid": value})
    num = self.sampler.config.train.fid_num_samples
    logging.info("step %d: FID %.4f (%d EMA samples vs %s)", step, value, num, self.ref_path)
    return value
