"""Training data: offline and tfds sources (`load_source`) and resumable batching (`Pipeline`)."""

from infonoise_jax.data.pipeline import DevicePrefetcher, Pipeline, Prefetcher
from infonoise_jax.data.sources import Source, load_source, resolve_data_paths, resolve_sigma_data
from infonoise_jax.data.synthetic import GaussianMixture

__all__ = [
  "DevicePrefetcher",
  "GaussianMixture",
  "Pipeline",
  "Prefetcher",
  "Source",
  "load_source",
  "resolve_data_paths",
  "resolve_sigma_data",
]
