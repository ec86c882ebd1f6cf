"""The ln-sigma axis: the sigma range, bins uniform in ln sigma, and the base laws on it.

Everything that bins noise levels (InfoNoise, the adaptive peers, the train step's per-level
loss summary, the trainer's window scalars) uses `LogSigmaGrid`; every log-normal or
log-uniform law of ln sigma (the fixed schedules, the warm-up bases, EDM2's sampler) is a
`LogNormalLaw` or `LogUniformLaw`. The range is one setting, `edm.sigma_min..edm.sigma_max`,
read and checked by `sigma_range`.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.scipy.special import ndtr, ndtri

Array = jax.Array

BASE_LAWS = ("lognormal", "loguniform")  # names of the warm-up / importance bases


def check_range(sigma_min: float, sigma_max: float, keys=("sigma_min", "sigma_max")) -> None:
  """Raises ValueError naming `keys` unless 0 < sigma_min < sigma_max < inf."""
  lo_key, hi_key = keys
  if not (math.isfinite(sigma_min) and sigma_min > 0):
    raise ValueError(f"{lo_key} must be finite and > 0, got {sigma_min!r}")
  if not (math.isfinite(sigma_max) and sigma_max > sigma_min):
    raise ValueError(f"{hi_key} must be finite and > {lo_key} = {sigma_min!r}, got {sigma_max!r}")


# Most bins of a binned estimator (InfoNoise, the adaptive peers): their refresh builds K x K
# tables (InfoNoise's smoothing, the isotonic fit), which at 10^5 bins need tens of GiB.
MAX_BINS = 4096


def sigma_range(config: ml_collections.ConfigDict) -> tuple[float, float]:
  """The validated (edm.sigma_min, edm.sigma_max): the one noise range of a run."""
  lo, hi = float(config.edm.sigma_min), float(config.edm.sigma_max)
  check_range(lo, hi, ("edm.sigma_min", "edm.sigma_max"))
  return lo, hi


@dataclasses.dataclass(frozen=True)
class LogSigmaGrid:
  """K bins uniform in l = ln sigma over [ln sigma_min, ln sigma_max]."""

  num_bins: int
  sigma_min: float
  sigma_max: float

  def __post_init__(self):
    check_range(self.sigma_min, self.sigma_max)
    if self.num_bins < 1:
      raise ValueError(f"num_bins must be >= 1, got {self.num_bins!r}")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, num_bins: int) -> "LogSigmaGrid":
    return cls(int(num_bins), *sigma_range(config))

  @property
  def lo(self) -> float:
    return math.log(self.sigma_min)

  @property
  def hi(self) -> float:
    return math.log(self.sigma_max)

  @property
  def width(self) -> float:
    """Delta: width of a bin in ln sigma."""
    return (self.hi - self.lo) / self.num_bins

  def edges_np(self) -> np.ndarray:
    """K+1 bin edges in ln sigma (float64, host)."""
    return np.linspace(self.lo, self.hi, self.num_bins + 1)

  def centres_np(self) -> np.ndarray:
    """K bin centres in ln sigma (float64, host)."""
    e_E = self.edges_np()
    return 0.5 * (e_E[1:] + e_E[:-1])

  def edges(self) -> Array:
    """K+1 bin edges in ln sigma (float32)."""
    return jnp.asarray(self.edges_np(), jnp.float32)

  def centres(self) -> Array:
    """K bin centres in ln sigma (float32)."""
    e_E = self.edges()
    return 0.5 * (e_E[1:] + e_E[:-1])

  def contains(self, log_sigma: Array) -> Array:
    """Whether ln sigma lies on the grid, ends included."""
    return (log_sigma >= self.lo) & (log_sigma <= self.hi)

  def index(self, log_sigma: Array) -> Array:
    """Bin of each ln sigma, int32; values off the grid go to the nearest end bin."""
    pos = jnp.floor((log_sigma - self.lo) / self.width)
    return jnp.clip(pos, 0, self.num_bins - 1).astype(jnp.int32)

  def record(
    self, log_sigma_B: Array, value_B: Array, valid_B: Array | None = None
  ) -> tuple[Array, Array]:
    """Per-bin (sums_K, counts_K) of `value_B` over the entries with `valid_B` (default all).

    A fixed-length segment sum: under jit with a sharded batch it is the reduction over the
    global batch. Invalid entries add nothing (their values may be NaN).
    """
    if valid_B is None:
      valid_B = jnp.ones(value_B.shape, jnp.bool_)
    idx_B = self.index(jnp.where(valid_B, log_sigma_B, self.lo))
    k = self.num_bins
    sums_K = jax.ops.segment_sum(jnp.where(valid_B, value_B, 0.0), idx_B, num_segments=k)
    counts_K = jax.ops.segment_sum(valid_B.astype(value_B.dtype), idx_B, num_segments=k)
    return sums_K, counts_K

  def step_density(self, pmf_K: Array, log_sigma: Array) -> Array:
    """Density per unit ln sigma of the law that puts mass pmf_K uniformly in each bin."""
    inside = self.contains(log_sigma)
    return jnp.where(inside, pmf_K[self.index(log_sigma)] / self.width, 0.0)


def fill_unseen(
  v_K: Array, seen_K: Array, slope_below: float = 0.0, if_none_seen: float | None = None
) -> Array:
  """Unseen bins: linear in the bin index between the nearest seen bins.

  Above the highest seen bin the value is held; below the lowest it continues from it with
  `slope_below` per bin. With no bin seen, `if_none_seen` everywhere (None: `v_K` unchanged).
  """
  k = v_K.shape[0]
  i_K = jnp.arange(k)
  left_K = jax.lax.cummax(jnp.where(seen_K, i_K, -1), axis=0)
  right_K = jax.lax.cummin(jnp.where(seen_K, i_K, k), axis=0, reverse=True)
  has_l_K, has_r_K = left_K >= 0, right_K < k
  v_l_K = v_K[jnp.clip(left_K, 0, k - 1)]
  v_r_K = v_K[jnp.clip(right_K, 0, k - 1)]
  t_K = (i_K - left_K) / jnp.maximum(right_K - left_K, 1)
  between_K = v_l_K + t_K * (v_r_K - v_l_K)
  below_K = v_r_K + slope_below * (i_K - right_K)
  none_K = v_K if if_none_seen is None else jnp.full_like(v_K, if_none_seen)
  out_K = jnp.where(
    has_l_K, jnp.where(has_r_K, between_K, v_l_K), jnp.where(has_r_K, below_K, none_K)
  )
  return jnp.where(seen_K, v_K, out_K)


@dataclasses.dataclass(frozen=True)
class LogNormalLaw:
  """l = ln sigma ~ N(mean, std^2), truncated to [lo, hi] (default: not truncated)."""

  mean: float
  std: float
  lo: float = -math.inf
  hi: float = math.inf

  def truncated(self, lo: float, hi: float) -> "LogNormalLaw":
    return dataclasses.replace(self, lo=lo, hi=hi)

  @property
  def is_truncated(self) -> bool:
    return math.isfinite(self.lo) or math.isfinite(self.hi)

  def _z(self, log_sigma):
    return (log_sigma - self.mean) / self.std

  def _mass(self) -> Array:
    return ndtr(jnp.float32(self._z(self.hi))) - ndtr(jnp.float32(self._z(self.lo)))

  def density(self, log_sigma: Array) -> Array:
    z = self._z(log_sigma)
    pdf = jnp.exp(-0.5 * z * z) / (self.std * math.sqrt(2.0 * math.pi))
    if not self.is_truncated:
      return pdf
    return jnp.where((log_sigma >= self.lo) & (log_sigma <= self.hi), pdf / self._mass(), 0.0)

  def cdf(self, log_sigma: Array) -> Array:
    f = ndtr(self._z(log_sigma))
    if not self.is_truncated:
      return f
    f_lo = ndtr(jnp.float32(self._z(self.lo)))
    return jnp.clip((f - f_lo) / self._mass(), 0.0, 1.0)

  def inverse_cdf(self, u: Array) -> Array:
    if self.is_truncated:
      f_lo = ndtr(jnp.float32(self._z(self.lo)))
      u = f_lo + u * self._mass()
    return self.mean + self.std * ndtri(u)

  def sample(self, key: Array, n: int) -> Array:
    """n draws of ln sigma (float32)."""
    if not self.is_truncated:
      return self.mean + self.std * jax.random.normal(key, (n,), jnp.float32)
    z_lo, z_hi = self._z(self.lo), self._z(self.hi)
    return self.mean + self.std * jax.random.truncated_normal(key, z_lo, z_hi, (n,), jnp.float32)


@dataclasses.dataclass(frozen=True)
class LogUniformLaw:
  """l = ln sigma ~ U[lo, hi]."""

  lo: float
  hi: float

  def truncated(self, lo: float, hi: float) -> "LogUniformLaw":
    return LogUniformLaw(max(self.lo, lo), min(self.hi, hi))

  def density(self, log_sigma: Array) -> Array:
    inside = (log_sigma >= self.lo) & (log_sigma <= self.hi)
    return jnp.where(inside, 1.0 / (self.hi - self.lo), 0.0)

  def cdf(self, log_sigma: Array) -> Array:
    return jnp.clip((log_sigma - self.lo) / (self.hi - self.lo), 0.0, 1.0)

  def inverse_cdf(self, u: Array) -> Array:
    return self.lo + u * (self.hi - self.lo)

  def sample(self, key: Array, n: int) -> Array:
    return jax.random.uniform(key, (n,), jnp.float32, self.lo, self.hi)


Law = LogNormalLaw | LogUniformLaw


def base_law(name: str, p_mean: float, p_std: float, grid: LogSigmaGrid) -> Law:
  """The named base law (`BASE_LAWS`), not truncated; log-uniform spans the grid."""
  if name == "lognormal":
    return LogNormalLaw(p_mean, p_std)
  if name == "loguniform":
    return LogUniformLaw(grid.lo, grid.hi)
  raise ValueError(f"base must be one of {BASE_LAWS}, got {name!r}")
