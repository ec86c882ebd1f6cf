"""InfoNoise: the online, information-guided training noise distribution (docs/method.md section 4).

The estimator is a pure function on a small fixed-shape state that lives in the TrainState:

  record   every step, per-bin sums and counts of the unweighted errors err = ||D - x0||^2 / d
           (a segment-sum over the global batch; under jit with a sharded batch this *is* the
           cross-device reduction), non-finite errors dropped and counted;
  refresh  every M steps once W steps have been recorded (a select on the step counter, so
           nothing recompiles): window mean per bin, EMA across refreshes, bins with fewer than
           n_min samples keep their value *and their samples* for the next window (ours), bins
           never seen are filled by interpolation, optional smoothing, q = m / sigma^2, low-noise
           gate, weight compensation pi ~ rho / w, uniform floor, CDF table, max|dCDF|;
  sample   inverse CDF, piecewise linear in ln sigma; the base distribution (EDM log-normal or
           log-uniform) until the first refresh.

State (fixed shapes, K = num_bins): sums_K, counts_K (open window), m_K (EMA of the per-dim error,
init 1), seen_K, cdf_E (K+1 edges), refreshes, max_dcdf (last refresh), dropped (non-finite
errors so far), gate_pivot (c actually used). `profile` and `cdf` expose it for plots/InfoGrid.

Choices marked (ours) in docs/method.md are settings here (see configs/default.py,
`schedule.infonoise`). The gate pivot rules live in `infonoise_jax.profiles`.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from infonoise_jax import edm, profiles

Array = jax.Array
State = dict[str, Array]

_GATES = ("pinned", "onset", "onset_literal", "none")
_BASES = ("lognormal", "loguniform")
_TINY = 1e-30  # floor on m so log-space steps stay finite (Bayes errors underflow to 0)
_ERR_MAX = 1e30  # clip on a single error so sums of finite errors stay finite


@dataclasses.dataclass(frozen=True)
class InfoNoise:
  """InfoNoise schedule; every field is a static setting (see configs/default.py)."""

  num_bins: int = 128
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  refresh_every: int = 100
  warmup_steps: int = 500
  ema_beta: float = 0.9
  min_count: int = 4
  smoothing: float = 1.0
  gate: str = "pinned"
  gate_pivot: float = 0.2
  gate_power: float = 3.0
  onset_threshold: float = 0.2
  onset_literal_threshold: float = 0.002
  compensate: bool = True
  floor: float = 0.01
  base: str = "lognormal"
  sigma_data: float = 0.5
  base_p_mean: float = -1.2
  base_p_std: float = 1.2

  def __post_init__(self):
    _validate(self)

  @classmethod
  def from_config(cls, config) -> "InfoNoise":
    """Builds from the whole ConfigDict (schedule.infonoise, edm.sigma_data, schedule.lognormal)."""
    c = config.schedule.infonoise
    return cls(
      num_bins=int(c.num_bins),
      sigma_min=float(c.sigma_min),
      sigma_max=float(c.sigma_max),
      refresh_every=int(c.refresh_every),
      warmup_steps=int(c.warmup_steps),
      ema_beta=float(c.ema_beta),
      min_count=int(c.min_count),
      smoothing=float(c.smoothing),
      gate=str(c.gate),
      gate_pivot=float(c.gate_pivot),
      gate_power=float(c.gate_power),
      onset_threshold=float(c.onset_threshold),
      onset_literal_threshold=float(c.onset_literal_threshold),
      compensate=bool(c.compensate),
      floor=float(c.floor),
      base=str(c.base),
      sigma_data=float(config.edm.sigma_data),
      base_p_mean=float(config.schedule.lognormal.p_mean),
      base_p_std=float(config.schedule.lognormal.p_std),
    )

  # --------------------------------------------------------------------------- grid
  @property
  def bin_width(self) -> float:
    """Delta = width of a bin in ln sigma."""
    return (math.log(self.sigma_max) - math.log(self.sigma_min)) / self.num_bins

  @property
  def log_sigma_edges(self) -> Array:
    """K+1 bin edges in ln sigma."""
    e = np.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.num_bins + 1)
    return jnp.asarray(e, jnp.float32)

  @property
  def log_sigma_centres(self) -> Array:
    """K bin centres in ln sigma."""
    e = self.log_sigma_edges
    return 0.5 * (e[1:] + e[:-1])

  # --------------------------------------------------------------------------- interface
  def init_state(self) -> State:
    k = self.num_bins
    z = jnp.zeros((), jnp.float32)
    return {
      "sums_K": jnp.zeros((k,), jnp.float32),
      "counts_K": jnp.zeros((k,), jnp.float32),
      "m_K": jnp.ones((k,), jnp.float32),
      "seen_K": jnp.zeros((k,), jnp.bool_),
      "cdf_E": self._base_cdf(self.log_sigma_edges),
      "refreshes": jnp.zeros((), jnp.int32),
      "max_dcdf": z + 1.0,
      "dropped": jnp.zeros((), jnp.int32),
      "gate_pivot": z + self.gate_pivot,
    }

  def sample(self, state: State, key: Array, batch_size: int) -> tuple[Array, Array]:
    """sigma_B from the table (or the base before the first refresh) and unit loss weights."""
    u_B = jax.random.uniform(key, (batch_size,), jnp.float32, 1e-7, 1.0 - 1e-7)
    log_sigma_B = jnp.where(
      state["refreshes"] > 0, self._table_inverse(state["cdf_E"], u_B), self._base_inverse(u_B)
    )
    sigma_B = jnp.exp(log_sigma_B)
    return sigma_B, jnp.ones_like(sigma_B)

  def update(
    self, state: State, step: Array, sigma_B: Array, err_B: Array, loss_B: Array
  ) -> tuple[State, dict[str, Array]]:
    """Records the batch, then refreshes if `step` (0-based, this step) closes a window."""
    del loss_B
    state = self._record(state, sigma_B, err_B)
    n = step + 1  # steps recorded so far
    w, m = self.warmup_steps, self.refresh_every
    do_refresh = (n >= max(w, 1)) & ((n - w) % m == 0)
    refreshed = self._refresh(state)
    state = jax.tree.map(lambda a, b: jnp.where(do_refresh, a, b), refreshed, state)
    metrics = {
      "infonoise/max_dcdf": state["max_dcdf"],
      "infonoise/refreshes": state["refreshes"],
      "infonoise/dropped": state["dropped"],
      "infonoise/gate_pivot": state["gate_pivot"],
    }
    return state, metrics

  def density(self, state: State, log_sigma_G: Array) -> Array:
    """Sampling density of ln sigma: piecewise constant pi_k / Delta, or the base density."""
    pi_K = jnp.diff(state["cdf_E"])
    idx_G = jnp.floor((log_sigma_G - math.log(self.sigma_min)) / self.bin_width).astype(jnp.int32)
    inside_G = (idx_G >= 0) & (idx_G < self.num_bins)
    table_G = jnp.where(inside_G, pi_K[jnp.clip(idx_G, 0, self.num_bins - 1)], 0.0)
    return jnp.where(
      state["refreshes"] > 0, table_G / self.bin_width, self._base_density(log_sigma_G)
    )

  # --------------------------------------------------------------------------- diagnostics
  def profile(self, state: State) -> tuple[Array, Array]:
    """(ln sigma_K, rho_K): gated, normalized entropy rate per unit ln sigma at the bin centres."""
    log_sigma_K = self.log_sigma_centres
    q_K = self._entropy_rate(state["m_K"])
    if self.gate == "none":
      rho_K = profiles.normalize(q_K)
    else:
      rho_K = profiles.gated_profile(log_sigma_K, q_K, state["gate_pivot"], self.gate_power)
    return log_sigma_K, rho_K / self.bin_width

  def cdf(self, state: State) -> tuple[Array, Array]:
    """(ln sigma_E, CDF_E): the sampling table at the K+1 bin edges."""
    return self.log_sigma_edges, state["cdf_E"]

  # --------------------------------------------------------------------------- internals
  def _bin_index(self, sigma_B: Array) -> tuple[Array, Array]:
    log_sigma_B = jnp.log(jnp.maximum(sigma_B, 1e-38))
    pos_B = (log_sigma_B - math.log(self.sigma_min)) / self.bin_width
    inside_B = (pos_B >= 0.0) & (pos_B <= self.num_bins)
    return jnp.clip(jnp.floor(pos_B), 0, self.num_bins - 1).astype(jnp.int32), inside_B

  def _record(self, state: State, sigma_B: Array, err_B: Array) -> State:
    """Step 2: per-bin segment sums and counts; NaN/Inf are dropped and counted."""
    sigma_B = sigma_B.astype(jnp.float32)
    err_B = err_B.astype(jnp.float32)
    finite_B = jnp.isfinite(err_B) & jnp.isfinite(sigma_B) & (sigma_B > 0)
    idx_B, inside_B = self._bin_index(jnp.where(finite_B, sigma_B, 1.0))
    valid_B = finite_B & inside_B
    err_B = jnp.where(valid_B, jnp.clip(err_B, 0.0, _ERR_MAX), 0.0)
    k = self.num_bins
    sums_K = jax.ops.segment_sum(err_B, idx_B, num_segments=k)
    counts_K = jax.ops.segment_sum(valid_B.astype(jnp.float32), idx_B, num_segments=k)
    return {
      **state,
      "sums_K": state["sums_K"] + sums_K,
      "counts_K": state["counts_K"] + counts_K,
      "dropped": state["dropped"] + jnp.sum(~finite_B).astype(jnp.int32),
    }

  def _refresh(self, state: State) -> State:
    """Step 3-7: window means -> EMA -> fill -> profile -> gate -> pi -> CDF table."""
    counts_K, sums_K = state["counts_K"], state["sums_K"]
    mean_K = jnp.maximum(sums_K / jnp.maximum(counts_K, 1.0), _TINY)
    new_K = (counts_K >= max(self.min_count, 1)) & jnp.isfinite(mean_K)
    ema_K = self.ema_beta * state["m_K"] + (1.0 - self.ema_beta) * mean_K
    # first observation of a bin replaces the arbitrary initial m = 1 (no EMA bias)
    m_K = jnp.where(new_K, jnp.where(state["seen_K"], ema_K, mean_K), state["m_K"])
    seen_K = state["seen_K"] | new_K
    m_K = self._fill_unseen(m_K, seen_K)
    q_K = self._entropy_rate(m_K)
    pivot = self._pivot(q_K, state["gate_pivot"])
    cdf_E = self._cdf_from_profile(q_K, pivot)
    return {
      **state,
      "sums_K": jnp.where(new_K, 0.0, sums_K),
      "counts_K": jnp.where(new_K, 0.0, counts_K),
      "m_K": m_K,
      "seen_K": seen_K,
      "cdf_E": cdf_E,
      "refreshes": state["refreshes"] + 1,
      "max_dcdf": jnp.max(jnp.abs(cdf_E - state["cdf_E"])),
      "gate_pivot": pivot,
    }

  def _fill_unseen(self, m_K: Array, seen_K: Array) -> Array:
    """Never-seen bins: ln m linear in ln sigma between the nearest seen bins (ours).

    Below the lowest seen bin m ~ sigma^2 (constant q, the continuous-data limit); above the
    highest, m is held (m -> Var(x0) at high noise). With no bin seen, m is unchanged.
    """
    k = self.num_bins
    i_K = jnp.arange(k)
    left_K = jax.lax.cummax(jnp.where(seen_K, i_K, -1))
    right_K = jax.lax.cummin(jnp.where(seen_K, i_K, k), reverse=True)
    lm_K = jnp.log(m_K)
    lm_l = lm_K[jnp.clip(left_K, 0, k - 1)]
    lm_r = lm_K[jnp.clip(right_K, 0, k - 1)]
    t_K = (i_K - left_K) / jnp.maximum(right_K - left_K, 1)
    both = lm_l + t_K * (lm_r - lm_l)
    below = lm_r + 2.0 * self.bin_width * (i_K - right_K)  # ln m = ln m_r + 2 (x - x_r)
    filled = jnp.where(left_K < 0, jnp.where(right_K < k, below, lm_K), both)
    filled = jnp.where(right_K >= k, jnp.where(left_K >= 0, lm_l, lm_K), filled)
    return jnp.where(seen_K, m_K, jnp.exp(filled))

  def _entropy_rate(self, m_K: Array) -> Array:
    """Step 4: q_k = m_k / sigma_k^2, optionally smoothed in ln q across bins (ours)."""
    log_q_K = jnp.log(jnp.maximum(m_K, _TINY)) - 2.0 * self.log_sigma_centres
    if self.smoothing > 0:
      log_q_K = _smoothing_matrix(self.num_bins, self.smoothing) @ log_q_K
    return jnp.exp(log_q_K)

  def _pivot(self, q_K: Array, old: Array) -> Array:
    """Step 5: the gate pivot c (pinned, or an automatic rule from profiles)."""
    x_K = self.log_sigma_centres
    if self.gate == "onset":
      return profiles.onset_pivot(x_K, q_K, self.onset_threshold)
    if self.gate == "onset_literal":
      return profiles.onset_pivot_literal(x_K, q_K, self.onset_literal_threshold)
    return jnp.full_like(old, self.gate_pivot)

  def _cdf_from_profile(self, q_K: Array, pivot: Array) -> Array:
    """Steps 5-7: rho = q g; pi ~ rho / w (or rho); uniform floor; CDF at the K+1 edges."""
    x_K = self.log_sigma_centres
    log_rho_K = jnp.log(q_K)
    if self.gate != "none":
      log_rho_K += jax.nn.log_sigmoid(self.gate_power * (x_K - jnp.log(pivot)))
    if self.compensate:
      log_rho_K -= jnp.log(edm.loss_weight(jnp.exp(x_K), self.sigma_data))
    pi_K = jax.nn.softmax(log_rho_K)  # normalized in log space: no overflow for extreme m
    pi_K = (1.0 - self.floor) * pi_K + self.floor / self.num_bins
    cdf_E = jnp.concatenate([jnp.zeros((1,), jnp.float32), jnp.cumsum(pi_K)])
    return cdf_E / cdf_E[-1]

  def _table_inverse(self, cdf_E: Array, u_B: Array) -> Array:
    """Step 7: ln sigma = F^{-1}(u), F piecewise linear over the bin edges."""
    k = jnp.clip(jnp.searchsorted(cdf_E, u_B, side="right") - 1, 0, self.num_bins - 1)
    lo_B, hi_B = cdf_E[k], cdf_E[k + 1]
    t_B = jnp.clip((u_B - lo_B) / jnp.maximum(hi_B - lo_B, 1e-12), 0.0, 1.0)
    return math.log(self.sigma_min) + (k + t_B) * self.bin_width

  def _base_inverse(self, u_B: Array) -> Array:
    """Step 8: inverse CDF of the base distribution of ln sigma."""
    if self.base == "lognormal":
      return self.base_p_mean + self.base_p_std * ndtri(u_B)
    lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
    return lo + u_B * (hi - lo)

  def _base_density(self, log_sigma_G: Array) -> Array:
    if self.base == "lognormal":
      z = (log_sigma_G - self.base_p_mean) / self.base_p_std
      return jnp.exp(-0.5 * z**2) / (self.base_p_std * math.sqrt(2.0 * math.pi))
    lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
    return jnp.where((log_sigma_G >= lo) & (log_sigma_G <= hi), 1.0 / (hi - lo), 0.0)

  def _base_cdf(self, log_sigma_E: Array) -> Array:
    """Base distribution restricted to the grid, as a CDF table (reference for max|dCDF|)."""
    if self.base == "lognormal":
      f_E = jax.scipy.stats.norm.cdf(log_sigma_E, self.base_p_mean, self.base_p_std)
    else:
      f_E = log_sigma_E - log_sigma_E[0]
    f_E = f_E - f_E[0]
    return (f_E / f_E[-1]).astype(jnp.float32)


def _smoothing_matrix(k: int, width: float) -> Array:
  """Row-normalized Gaussian kernel over bins, truncated at the grid ends (static, K x K)."""
  i = np.arange(k)
  w = np.exp(-0.5 * ((i[:, None] - i[None, :]) / width) ** 2)
  return jnp.asarray(w / w.sum(axis=1, keepdims=True), jnp.float32)


def _validate(s: InfoNoise) -> None:
  """Raises ValueError naming the config key of the first invalid setting."""
  key = "schedule.infonoise."
  checks = [
    ("sigma_min", 0 < s.sigma_min < s.sigma_max, f"must be in (0, sigma_max = {s.sigma_max})"),
    ("num_bins", s.num_bins >= 2, "must be >= 2"),
    ("refresh_every", s.refresh_every >= 1, "must be >= 1"),
    ("warmup_steps", s.warmup_steps >= 0, "must be >= 0"),
    ("ema_beta", 0.0 <= s.ema_beta < 1.0, "must be in [0, 1)"),
    ("min_count", s.min_count >= 0, "must be >= 0"),
    ("smoothing", s.smoothing >= 0, "must be >= 0"),
    ("gate", s.gate in _GATES, f"must be one of {_GATES}"),
    ("gate_pivot", s.gate_pivot > 0, "must be > 0"),
    ("gate_power", s.gate_power > 0, "must be > 0"),
    ("onset_threshold", 0.0 < s.onset_threshold < 1.0, "must be in (0, 1)"),
    ("onset_literal_threshold", 0.0 < s.onset_literal_threshold < 1.0, "must be in (0, 1)"),
    ("floor", 0.0 <= s.floor <= 1.0, "must be in [0, 1]"),
    ("base", s.base in _BASES, f"must be one of {_BASES}"),
  ]
  for name, ok, why in checks:
    if not ok:
      raise ValueError(f"{key}{name} = {getattr(s, name)!r} {why}")
  if s.sigma_data <= 0:
    raise ValueError(f"edm.sigma_data = {s.sigma_data!r} must be > 0")
  if s.base_p_std <= 0:
    raise ValueError(f"schedule.lognormal.p_std = {s.base_p_std!r} must be > 0")
