"""InfoNoise: the online, information-guided training noise distribution (docs/method.md section 4).

The estimator is a pure function on a small fixed-shape state that lives in the TrainState:

  record   every step, per-bin sums and counts of the unweighted errors err = ||D - x0||^2 / d
           (a segment-sum over the global batch; under jit with a sharded batch this *is* the
           cross-device reduction), non-finite errors dropped and counted;
  refresh  every M updates once W have been recorded (a select on the state's update counter,
           so nothing recompiles): window mean per bin, EMA across refreshes, bins with fewer than
           n_min samples keep their value *and their samples* for the next window (ours), bins
           never seen are filled by interpolation, optional smoothing, q = m / sigma^2, low-noise
           gate, weight compensation pi ~ rho / w, uniform floor, CDF table, max|dCDF|;
  sample   inverse CDF, piecewise linear in ln sigma; the base distribution (EDM log-normal or
           log-uniform) until the first refresh.

State (fixed shapes, K = num_bins): sums_K, counts_K (open window), m_K (EMA of the per-dim error,
init 1), seen_K, cdf_E (K+1 edges), refreshes, max_dcdf (last refresh), dropped (non-finite
errors so far), gate_pivot (c actually used), num_updates (batches recorded). `profile` exposes
the learned profile for plots and InfoGrid.

Choices marked (ours) in docs/method.md are settings here (see configs/default.py,
`schedule.infonoise`). The gate pivot rules live in `infonoise_jax.profiles`.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from infonoise_jax import edm, log_sigma, profiles

Array = jax.Array
State = dict[str, Array]

_GATES = ("pinned", "onset", "onset_literal", "none")
_TINY = 1e-30  # floor on m so log-space steps stay finite (Bayes errors underflow to 0)
_ERR_MAX = 1e30  # clip on a single error so sums of finite errors stay finite


@dataclasses.dataclass(frozen=True)
class InfoNoise:
  """InfoNoise schedule; every field is a static setting (see configs/default.py)."""

  num_bins: int = 128
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  refresh_every: int = 100
  warmup_steps: int = 100
  ema_beta: float = 0.9
  min_count: int = 4
  smoothing: float = 1.0
  gate: str = "onset"
  gate_pivot: float = 0.2
  gate_power: float = 3.0
  onset_threshold: float = 0.2
  onset_literal_threshold: float = 0.002
  onset_refreshes: int = 0
  compensate: bool = True
  floor: float = 0.0
  base: str = "lognormal"
  sigma_data: float = 0.5
  base_p_mean: float = -1.2
  base_p_std: float = 1.2

  # The schedule.* sections from_config reads (resume.py compares only these on a resume):
  # schedule.lognormal gives the warm-up base's p_mean / p_std.
  config_sections: ClassVar[tuple[str, ...]] = ("infonoise", "lognormal")

  def __post_init__(self):
    _validate(self)

  @classmethod
  def from_config(cls, config) -> "InfoNoise":
    """Builds from the whole ConfigDict (schedule.infonoise, edm, schedule.lognormal)."""
    c = config.schedule.infonoise
    sigma_min, sigma_max = log_sigma.sigma_range(config)
    return cls(
      num_bins=int(c.num_bins),
      sigma_min=sigma_min,
      sigma_max=sigma_max,
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
      onset_refreshes=int(c.onset_refreshes),
      compensate=bool(c.compensate),
      floor=float(c.floor),
      base=str(c.base),
      sigma_data=float(config.edm.sigma_data),
      base_p_mean=float(config.schedule.lognormal.p_mean),
      base_p_std=float(config.schedule.lognormal.p_std),
    )

  # --------------------------------------------------------------------------- grid, base
  @property
  def grid(self) -> log_sigma.LogSigmaGrid:
    """The K bins in ln sigma over [sigma_min, sigma_max]."""
    return log_sigma.LogSigmaGrid(self.num_bins, self.sigma_min, self.sigma_max)

  @property
  def bin_width(self) -> float:
    """Delta = width of a bin in ln sigma."""
    return self.grid.width

  @property
  def base_law(self) -> log_sigma.Law:
    """The warm-up law of ln sigma (not truncated: sampled as is until the first refresh)."""
    return log_sigma.base_law(self.base, self.base_p_mean, self.base_p_std, self.grid)

  # --------------------------------------------------------------------------- interface
  def init_state(self) -> State:
    k, g = self.num_bins, self.grid
    z = jnp.zeros((), jnp.float32)
    return {
      "sums_K": jnp.zeros((k,), jnp.float32),
      "counts_K": jnp.zeros((k,), jnp.float32),
      "m_K": jnp.ones((k,), jnp.float32),
      "seen_K": jnp.zeros((k,), jnp.bool_),
      # the base restricted to the grid, as a table: the reference of the first max|dCDF|
      "cdf_E": self.base_law.truncated(g.lo, g.hi).cdf(g.edges()).astype(jnp.float32),
      "refreshes": jnp.zeros((), jnp.int32),
      "max_dcdf": z + 1.0,
      "dropped": jnp.zeros((), jnp.int32),
      "gate_pivot": z + self.gate_pivot,
      "num_updates": jnp.zeros((), jnp.int32),
    }

  def sample(self, state: State, key: Array, batch_size: int) -> tuple[Array, Array]:
    """sigma_B from the table (or the base before the first refresh) and unit loss weights."""
    u_B = jax.random.uniform(key, (batch_size,), jnp.float32, 1e-7, 1.0 - 1e-7)
    log_sigma_B = jnp.where(
      state["refreshes"] > 0,
      self._table_inverse(state["cdf_E"], u_B),
      self.base_law.inverse_cdf(u_B),
    )
    sigma_B = jnp.exp(log_sigma_B)
    return sigma_B, jnp.ones_like(sigma_B)

  def update(
    self, state: State, sigma_B: Array, err_B: Array, loss_B: Array
  ) -> tuple[State, dict[str, Array]]:
    """Records the batch, then refreshes if this update closes a window."""
    del loss_B
    state = self._record(state, sigma_B, err_B)
    n = state["num_updates"]  # updates recorded so far, this one included
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
    table_G = self.grid.step_density(jnp.diff(state["cdf_E"]), log_sigma_G)
    return jnp.where(state["refreshes"] > 0, table_G, self.base_law.density(log_sigma_G))

  # --------------------------------------------------------------------------- diagnostics
  def profile(self, state: State) -> tuple[Array, Array]:
    """(ln sigma_K, rho_K): gated, normalized entropy rate per unit ln sigma at the bin centres."""
    log_sigma_K = self.grid.centres()
    q_K = self._entropy_rate(state["m_K"])
    if self.gate == "none":
      rho_K = profiles.normalize(q_K)
    else:
      rho_K = profiles.gated_profile(log_sigma_K, q_K, state["gate_pivot"], self.gate_power)
    return log_sigma_K, rho_K / self.bin_width

  # --------------------------------------------------------------------------- internals
  def _record(self, state: State, sigma_B: Array, err_B: Array) -> State:
    """Step 2: per-bin segment sums and counts; NaN/Inf are dropped and counted."""
    sigma_B = sigma_B.astype(jnp.float32)
    err_B = err_B.astype(jnp.float32)
    finite_B = jnp.isfinite(err_B) & jnp.isfinite(sigma_B) & (sigma_B > 0)
    log_sigma_B = jnp.log(jnp.where(finite_B, sigma_B, 1.0))
    valid_B = finite_B & self.grid.contains(log_sigma_B)
    sums_K, counts_K = self.grid.record(log_sigma_B, jnp.clip(err_B, 0.0, _ERR_MAX), valid_B)
    return {
      **state,
      "sums_K": state["sums_K"] + sums_K,
      "counts_K": state["counts_K"] + counts_K,
      "dropped": state["dropped"] + jnp.sum(~finite_B).astype(jnp.int32),
      "num_updates": state["num_updates"] + 1,
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
    pivot = self._pivot(q_K, state["gate_pivot"], state["refreshes"])
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
    slope = 2.0 * self.bin_width  # ln m = ln m_r + 2 (x - x_r)
    filled_K = jnp.exp(log_sigma.fill_unseen(jnp.log(m_K), seen_K, slope_below=slope))
    return jnp.where(seen_K, m_K, filled_K)

  def _entropy_rate(self, m_K: Array) -> Array:
    """Step 4: q_k = m_k / sigma_k^2, optionally smoothed in ln q across bins (ours)."""
    log_q_K = jnp.log(jnp.maximum(m_K, _TINY)) - 2.0 * self.grid.centres()
    if self.smoothing > 0:
      log_q_K = _smoothing_matrix(self.num_bins, self.smoothing) @ log_q_K
    return jnp.exp(log_q_K)

  def _pivot(self, q_K: Array, old: Array, refreshes: Array) -> Array:
    """Step 5: the gate pivot c (pinned, or an automatic rule from profiles).

    With onset_refreshes = N > 0 an automatic rule sets c at the first N refreshes only and c
    is held afterwards (ours): on learned errors the rule otherwise follows the network's
    training progress rather than the data (experiments/RESULTS.md section 7).
    """
    x_K = self.grid.centres()
    if self.gate == "onset":
      new = profiles.onset_pivot(x_K, q_K, self.onset_threshold)
    elif self.gate == "onset_literal":
      new = profiles.onset_pivot_literal(x_K, q_K, self.onset_literal_threshold)
    else:
      return jnp.full_like(old, self.gate_pivot)
    if self.onset_refreshes > 0:
      new = jnp.where(refreshes < self.onset_refreshes, new, old)
    return new

  def _cdf_from_profile(self, q_K: Array, pivot: Array) -> Array:
    """Steps 5-7: rho = q g; pi ~ rho / w (or rho); uniform floor; CDF at the K+1 edges."""
    x_K = self.grid.centres()
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
    return self.grid.lo + (k + t_B) * self.bin_width


def _smoothing_matrix(k: int, width: float) -> Array:
  """Row-normalized Gaussian kernel over bins, truncated at the grid ends (static, K x K)."""
  i = np.arange(k)
  w = np.exp(-0.5 * ((i[:, None] - i[None, :]) / width) ** 2)
  return jnp.asarray(w / w.sum(axis=1, keepdims=True), jnp.float32)


def _validate(s: InfoNoise) -> None:
  """Raises ValueError naming the config key of the first invalid setting."""
  log_sigma.check_range(s.sigma_min, s.sigma_max, ("edm.sigma_min", "edm.sigma_max"))
  key = "schedule.infonoise."
  checks = [
    (
      "num_bins",
      2 <= s.num_bins <= log_sigma.MAX_BINS,
      f"must be in [2, {log_sigma.MAX_BINS}] (the refresh builds K x K tables)",
    ),
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
    ("onset_refreshes", s.onset_refreshes >= 0, "must be >= 0 (0: the rule at every refresh)"),
    ("floor", 0.0 <= s.floor <= 1.0, "must be in [0, 1]"),
    ("base", s.base in log_sigma.BASE_LAWS, f"must be one of {log_sigma.BASE_LAWS}"),
  ]
  for name, ok, why in checks:
    if not ok:
      raise ValueError(f"{key}{name} = {getattr(s, name)!r} {why}")
  if s.gate == "pinned" and not s.sigma_min <= s.gate_pivot <= s.sigma_max:
    raise ValueError(
      f"{key}gate_pivot = {s.gate_pivot!r} is outside the noise range [edm.sigma_min, "
      f"edm.sigma_max] = [{s.sigma_min:g}, {s.sigma_max:g}]: the pinned gate would be ~1 or ~0 "
      "at every sigma. Pick c inside it (0.15 for natural images, 0.2 for other data), or "
      f"switch the gate off with {key}gate=none"
    )
  if s.sigma_data <= 0:
    raise ValueError(f"edm.sigma_data = {s.sigma_data!r} must be > 0")
  if s.base_p_std <= 0:
    raise ValueError(f"schedule.lognormal.p_std = {s.base_p_std!r} must be > 0")
