"""Frechet Inception Distance: feature statistics, the distance, reference caches, sample FID.

FID (Heusel et al. 2017) between two sets of Inception pool features modelled as Gaussians
N(mu_1, S_1), N(mu_2, S_2):

  FID = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^{1/2})        (eq. FID)

Features come from the jitted, batch-sharded Flax network of inception.py; their mean and
covariance are accumulated on the host in float64 (numpy). Images come in as uint8
(`images.to_uint8`: EDM's quantization of model samples).
"""

import math
import os
import re
import time
import zipfile
from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import numpy as np
import scipy.linalg
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from infonoise_jax.evaluation import inception

FeatureFn = Callable[[np.ndarray], np.ndarray]  # uint8-range images NHWC -> (N, 2048) float


class Stats(NamedTuple):
  """Gaussian statistics of a feature set: mean (D,), covariance (D, D), count."""

  mu_D: np.ndarray
  sigma_DD: np.ndarray
  n: int


class StatsAccumulator(NamedTuple):
  """Running float64 sums of shifted features (shift = first batch mean, for stability)."""

  n: int
  shift_D: np.ndarray | None
  sum_D: np.ndarray | None
  sum_DD: np.ndarray | None


def init_stats() -> StatsAccumulator:
  return StatsAccumulator(0, None, None, None)


def update_stats(acc: StatsAccumulator, feats_ND: np.ndarray) -> StatsAccumulator:
  """Adds a batch of features; returns the new accumulator (inputs are not modified)."""
  f_ND = np.asarray(feats_ND, np.float64)
  if f_ND.shape[0] == 0:
    return acc
  bad_N = ~np.isfinite(f_ND).all(axis=1)
  if bad_N.any():  # else a nan mean and covariance, and a LinAlgError far from the cause
    raise ValueError(
      f"{int(bad_N.sum())} of {len(f_ND)} feature vectors are not finite (nan or inf): "
      "their statistics would mean nothing; check the samples they came from (a model or "
      "sampler that diverged)"
    )
  shift_D = f_ND.mean(axis=0) if acc.shift_D is None else acc.shift_D
  d_ND = f_ND - shift_D
  sum_D, sum_DD = d_ND.sum(axis=0), d_ND.T @ d_ND
  if acc.sum_D is not None:
    sum_D, sum_DD = sum_D + acc.sum_D, sum_DD + acc.sum_DD
  return StatsAccumulator(acc.n + f_ND.shape[0], shift_D, sum_D, sum_DD)


def finalize_stats(acc: StatsAccumulator) -> Stats:
  """Mean and unbiased covariance (ddof=1, as np.cov and every FID tool)."""
  if acc.n < 2:
    raise ValueError(f"need at least 2 feature vectors for a covariance, got {acc.n}")
  m_D = acc.sum_D / acc.n  # mean of shifted features
  sigma_DD = (acc.sum_DD - acc.n * np.outer(m_D, m_D)) / (acc.n - 1)
  return Stats(acc.shift_D + m_D, sigma_DD, acc.n)


def stats_of_features(feats_ND: np.ndarray) -> Stats:
  return finalize_stats(update_stats(init_stats(), feats_ND))


def _sqrt_psd(a_DD: np.ndarray) -> np.ndarray:
  w_D, v_DD = np.linalg.eigh(a_DD)
  return (v_DD * np.sqrt(np.clip(w_D, 0.0, None))) @ v_DD.T


def trace_sqrt_product(s1_DD: np.ndarray, s2_DD: np.ndarray, method: str = "eigh") -> float:
  """tr((S_1 S_2)^{1/2}) for symmetric PSD S_1, S_2, in float64.

  eigh: S_1 S_2 is similar to S_1^{1/2} S_2 S_1^{1/2}, which is symmetric PSD, so the trace
  is the sum of square roots of its (clipped) eigenvalues: no complex arithmetic at all.
  sqrtm: scipy.linalg.sqrtm of S_1 S_2 as in the TF/pytorch FID code, adding eps*I when the
  result is not finite and dropping an imaginary part when it is numerically negligible.
  """
  s1_DD, s2_DD = np.asarray(s1_DD, np.float64), np.asarray(s2_DD, np.float64)
  if method == "eigh":
    r_DD = _sqrt_psd((s1_DD + s1_DD.T) / 2)
    m_DD = r_DD @ s2_DD @ r_DD
    return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m_DD + m_DD.T) / 2), 0.0, None))))
  if method == "sqrtm":
    covmean = scipy.linalg.sqrtm(s1_DD @ s2_DD)
    if not np.isfinite(covmean).all():
      offset = np.eye(s1_DD.shape[0]) * 1e-6
      covmean = scipy.linalg.sqrtm((s1_DD + offset) @ (s2_DD + offset))
    if np.iscomplexobj(covmean):
      if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
        raise ValueError(f"sqrtm: imaginary component {np.max(np.abs(covmean.imag))}")
      covmean = covmean.real
    return float(np.trace(covmean))
  raise ValueError(f"unknown method {method!r}: eigh | sqrtm")


def frechet_distance(a: Stats, b: Stats, method: str = "eigh") -> float:
  """Squared Frechet distance between N(a.mu, a.sigma) and N(b.mu, b.sigma) (eq. FID)."""
  diff_D = np.asarray(a.mu_D, np.float64) - np.asarray(b.mu_D, np.float64)
  tr_cross = trace_sqrt_product(a.sigma_DD, b.sigma_DD, method)
  fid = diff_D @ diff_D + np.trace(a.sigma_DD) + np.trace(b.sigma_DD) - 2.0 * tr_cross
  return float(max(fid, 0.0))  # >= 0 mathematically; clip float64 round-off near 0


def make_feature_extractor(
  params, mesh: jax.sharding.Mesh | None = None, axis: str = "data", batch_size: int = 250
) -> FeatureFn:
  """Jitted Inception features with the batch sharded over mesh axis `axis`.

  The returned function takes host-local uint8-range images (N, H, W, C), any N, and gives
  the features (N_global, 2048) float32 as numpy, where N_global = N * process_count (every
  process must pass the same N; blocks in process order, so all hosts get the same stats).
  Inputs are padded to a fixed global batch (batch_size rounded up to a multiple of the axis
  size) so each image shape compiles once.
  """
  if mesh is None:
    auto = (jax.sharding.AxisType.Auto,)
    mesh = jax.make_mesh((jax.device_count(),), (axis,), axis_types=auto)
  replicated, batch_sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(axis))
  params = jax.device_put(params, replicated)
  # Replicated output: the (small) features are all-gathered on device, no host callback.
  fn = jax.jit(
    inception.features, in_shardings=(replicated, batch_sharded), out_shardings=replicated
  )
  num_procs = jax.process_count()
  per_proc = math.ceil(batch_size / mesh.shape[axis]) * mesh.shape[axis] // num_procs

  def extract(images_NHWC: np.ndarray) -> np.ndarray:
    images_NHWC = np.asarray(images_NHWC)
    out = []
    for start in range(0, images_NHWC.shape[0], per_proc):
      chunk = images_NHWC[start : start + per_proc]
      pad = [(0, per_proc - chunk.shape[0])] + [(0, 0)] * (chunk.ndim - 1)
      x = jax.make_array_from_process_local_data(batch_sharded, np.pad(chunk, pad))
      f_PND = np.asarray(fn(params, x)).reshape(num_procs, per_proc, -1)
      out.append(f_PND[:, : chunk.shape[0]].reshape(-1, f_PND.shape[-1]))  # drop padding
    return np.concatenate(out, axis=0) if out else np.zeros((0, inception.FEATURE_DIM))

  return extract


def compute_stats(images_iter: Iterable[np.ndarray], extractor: FeatureFn) -> Stats:
  """Statistics of the features of every uint8-range NHWC batch in `images_iter`."""
  acc = init_stats()
  for images_NHWC in images_iter:
    acc = update_stats(acc, extractor(images_NHWC))
  return finalize_stats(acc)


def compute_stats_and_halves(
  images_iter: Iterable[np.ndarray], extractor: FeatureFn, n: int
) -> tuple[Stats, Stats | None, Stats | None]:
  """`compute_stats` of all `n` images (accumulated exactly as it does), and of the first n // 2
  and the next n // 2 apart (None when n < 4): the FIDs of the two halves differ by the noise
  of drawing n / 2 samples, which is how one scored set measures its own draw noise."""
  acc, halves, seen, m = init_stats(), [init_stats(), init_stats()], 0, n // 2
  for images_NHWC in images_iter:
    f_ND = np.asarray(extractor(images_NHWC))
    acc = update_stats(acc, f_ND)
    idx_N = np.arange(seen, seen + len(f_ND))
    seen += len(f_ND)
    if m >= 2:
      halves = [
        update_stats(h, f_ND[(idx_N >= lo) & (idx_N < lo + m)])
        for h, lo in zip(halves, (0, m), strict=True)
      ]
  if seen != n:
    raise ValueError(f"compute_stats_and_halves: told {n} images, got {seen}")
  if m < 2:
    return finalize_stats(acc), None, None
  return finalize_stats(acc), finalize_stats(halves[0]), finalize_stats(halves[1])


def save_stats(path: str, stats: Stats) -> None:
  path = os.path.expanduser(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.npz"
  np.savez(tmp, mu=stats.mu_D, sigma=stats.sigma_DD, n=np.array(stats.n))
  os.replace(tmp, path)  # atomic: readers never see a partial file


GIVEN_STATS_FIX = (
  "give an .npz written by this package (fid.save_stats), or leave it out to compute one"
)


def load_stats(
  path: str, dim: int | None = inception.FEATURE_DIM, fix: str = GIVEN_STATS_FIX
) -> Stats:
  """The statistics in `path`, read once; ValueError naming `path` and `fix` unless it is an
  .npz of mu (dim,), sigma (dim, dim) and n (dim None: of any feature size, as a cache of
  another extractor's)."""
  what = f"reference statistics {path}"
  try:
    f = np.load(os.path.expanduser(path))
    if not isinstance(f, np.lib.npyio.NpzFile):  # `with` on an array was a TypeError traceback
      raise ValueError("one array (.npy), not an .npz of named arrays")
    with f:
      arrays = {k: f[k] for k in ("mu", "sigma", "n") if k in f.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise ValueError(f"{what}: not a readable .npz ({e}); {fix}") from e
  if set(arrays) != {"mu", "sigma", "n"}:
    raise ValueError(f"{what}: needs arrays mu, sigma and n, has {sorted(arrays)}; {fix}")
  mu, sigma = arrays["mu"], arrays["sigma"]
  if dim is not None and (mu.shape != (dim,) or sigma.shape != (dim, dim)):
    raise ValueError(
      f"{what}: mu {mu.shape} and sigma {sigma.shape} are not Inception pool features "
      f"({dim},) and ({dim}, {dim}); {fix}"
    )
  return Stats(mu, sigma, int(arrays["n"]))


def reference_stats_path(cache_dir: str, dataset_name: str) -> str:
  safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_name)
  return os.path.join(os.path.expanduser(cache_dir), f"{safe}.npz")


def reference_stats(
  dataset_name: str,
  images_iter_fn: Callable[[], Iterable[np.ndarray]],
  extractor: FeatureFn,
  cache_dir: str,
) -> Stats:
  """Reference statistics of a dataset, cached as <cache_dir>/<dataset_name>.npz.

  `images_iter_fn()` (uint8 NHWC batches of the whole reference set) is only called on a
  cache miss; the name must therefore identify the data (e.g. 'fashion_mnist_train').
  """
  path = reference_stats_path(cache_dir, dataset_name)
  if os.path.exists(path):
    return load_stats(path, dim=None, fix="delete it, and it is computed again")
  # Every reference image goes through the network once: minutes on a CPU, which printed
  # nothing (a 2026-12-07 probe took it for a hang).
  logging.info(
    "FID reference statistics of %s are not cached: computing them once (every reference "
    "image through the Inception network; minutes on a CPU), then cached as %s",
    dataset_name,
    path,
  )
  start = time.monotonic()
  stats = compute_stats(images_iter_fn(), extractor)
  logging.info("FID reference statistics of %s took %.0f s", dataset_name, time.monotonic() - start)
  if jax.process_index() == 0:
    save_stats(path, stats)
  return stats
