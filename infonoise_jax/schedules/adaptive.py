"""Adaptive peer schedules: CDCD time warping, VDM++ and iDDPM importance sampling, EDM2 weighting.

The three binned peers share one estimator on K bins uniform in l = ln sigma over
[edm.sigma_min, edm.sigma_max]. Every step, a per-example statistic s_B (err, loss or loss^2)
is added into per-bin sums and counts with fixed-length segment sums over the global batch,
after dropping non-finite entries. Sums and counts are discounted by beta every step
(S_k <- beta S_k + sum_k, N_k <- beta N_k + n_k), so est_k = S_k / N_k is an exponentially
weighted per-bin mean; bins never seen are filled by linear interpolation in l. After
`warmup_steps` updates the sampling pmf is pi_k = (1 - floor) t_k / sum t + floor / K for a
method-specific target t_k, sampled piecewise-constant in l; before it, sigma is drawn from
the base: log-normal(schedule.lognormal) truncated to the grid, or log-uniform on it.

EDM2 (Karras et al. 2024) keeps the base sampler and learns a weight instead (see `EDM2`).
"""

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import optax

from infonoise_jax import log_sigma
from infonoise_jax.schedules.base import Array, State, finite, positive


def isotonic_increasing(y_K: Array) -> Array:
  """Least-squares non-decreasing fit (equal weights): y_k = max_{i<=k} min_{j>=k} mean(y_i..j)."""
  k = y_K.shape[0]
  s_P = jnp.concatenate([jnp.zeros((1,), y_K.dtype), jnp.cumsum(y_K)])
  i_KK, j_KK = jnp.arange(k)[:, None], jnp.arange(k)[None, :]
  mean_KK = (s_P[j_KK + 1] - s_P[i_KK]) / jnp.maximum(j_KK - i_KK + 1, 1)
  mean_KK = jnp.where(j_KK >= i_KK, mean_KK, jnp.inf)
  min_right_KK = jax.lax.cummin(mean_KK, axis=1, reverse=True)  # [i, k] = min_{j>=k} mean(i..j)
  return jnp.max(jnp.where(i_KK <= j_KK, min_right_KK, -jnp.inf), axis=0)


def mix_floor(target_K: Array, floor: float) -> Array:
  """pi_k = (1 - floor) t_k / sum t + floor / K; uniform where t is unusable."""
  t_K = jnp.where(jnp.isfinite(target_K), jnp.maximum(target_K, 0.0), 0.0)
  total = jnp.sum(t_K)
  k = t_K.shape[0]
  p_K = jnp.where(total > 0, t_K / jnp.where(total > 0, total, 1.0), 1.0 / k)
  return (1.0 - floor) * p_K + floor / k


@dataclasses.dataclass(frozen=True)
class Binned:
  """Shared estimator and piecewise-constant sampler (module docstring); subclass per method."""

  num_bins: int = 64
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  ema_beta: float = 0.99
  floor: float = 0.01
  warmup_steps: int = 100
  base: str = "lognormal"  # lognormal (truncated to the grid) | loguniform
  p_mean: float = -1.2
  p_std: float = 1.2

  name: ClassVar[str] = "binned"  # registry name, prefixes the metrics ("<name>/...")
  importance: ClassVar[bool] = False  # sample returns weights base / pi
  # schedule.* sections read (resume.py compares only these): lognormal is the base's law
  config_sections: ClassVar[tuple[str, ...]] = ("adaptive", "lognormal")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, **extra) -> "Binned":
    a = config.schedule.adaptive
    lo, hi = log_sigma.sigma_range(config)
    if not 2 <= int(a.num_bins) <= log_sigma.MAX_BINS:
      raise ValueError(
        f"schedule.adaptive.num_bins must be in [2, {log_sigma.MAX_BINS}] (the refresh builds "
        f"K x K tables), got {a.num_bins!r}"
      )
    if not 0.0 <= a.ema_beta < 1.0:
      raise ValueError(f"schedule.adaptive.ema_beta must be in [0, 1), got {a.ema_beta!r}")
    if not 0.0 < a.floor <= 1.0:
      raise ValueError(f"schedule.adaptive.floor must be in (0, 1], got {a.floor!r}")
    if int(a.warmup_steps) < 0:
      raise ValueError(f"schedule.adaptive.warmup_steps must be >= 0, got {a.warmup_steps!r}")
    if a.base not in log_sigma.BASE_LAWS:
      raise ValueError(
        f"schedule.adaptive.base must be one of {log_sigma.BASE_LAWS}, got {a.base!r}"
      )
    ln = config.schedule.lognormal
    return cls(
      num_bins=int(a.num_bins),
      sigma_min=lo,
      sigma_max=hi,
      ema_beta=float(a.ema_beta),
      floor=float(a.floor),
      warmup_steps=int(a.warmup_steps),
      base=a.base,
      p_mean=finite(ln.p_mean, "schedule.lognormal.p_mean"),
      p_std=positive(ln.p_std, "schedule.lognormal.p_std"),
      **extra,
    )

  @property
  def grid(self) -> log_sigma.LogSigmaGrid:
    return log_sigma.LogSigmaGrid(self.num_bins, self.sigma_min, self.sigma_max)

  @property
  def base_law(self) -> log_sigma.Law:
    """The base law of l = ln sigma, truncated to the grid."""
    g = self.grid
    return log_sigma.base_law(self.base, self.p_mean, self.p_std, g).truncated(g.lo, g.hi)

  def base_density(self, log_sigma_G: Array) -> Array:
    """Density of l under the base, truncated to the grid and renormalized."""
    return self.base_law.density(log_sigma_G)

  def _base_pmf(self) -> Array:
    return jnp.diff(self.base_law.cdf(self.grid.edges()))

  def centers(self) -> Array:
    """Bin centers in l = ln sigma, shape [K]."""
    return self.grid.centres()

  # ---------------------------------------------------------------- method hooks
  def statistic(self, err_B: Array, loss_B: Array) -> Array:
    """Per-example quantity whose per-bin mean is estimated."""
    raise NotImplementedError

  def target(self, est_K: Array) -> Array:
    """Unnormalized sampling mass per bin from the per-bin estimates."""
    raise NotImplementedError

  # ---------------------------------------------------------------- interface
  def init_state(self) -> State:
    k = self.num_bins
    return {
      "sum_K": jnp.zeros((k,), jnp.float32),
      "count_K": jnp.zeros((k,), jnp.float32),
      "pmf_K": self._base_pmf().astype(jnp.float32),
      "num_updates": jnp.zeros((), jnp.int32),
    }

  def _active(self, state: State) -> Array:
    return state["num_updates"] >= self.warmup_steps

  def estimates(self, state: State) -> Array:
    """Per-bin discounted mean of the statistic, unseen bins interpolated, shape [K]."""
    seen_K = state["count_K"] > 0
    est_K = state["sum_K"] / jnp.where(seen_K, state["count_K"], 1.0)
    return log_sigma.fill_unseen(est_K, seen_K, if_none_seen=1.0)

  def sample(self, state: State, key: Array, batch_size: int) -> tuple[Array, Array]:
    bin_key, pos_key, base_key = jax.random.split(key, 3)
    # Pick a bin by its mass, then l uniform inside it (docs/method.md 4, step 7).
    logits_K = jnp.log(state["pmf_K"])
    bin_B = jax.random.categorical(bin_key, logits_K, shape=(batch_size,))
    u_B = jax.random.uniform(pos_key, (batch_size,), jnp.float32)
    g = self.grid
    l_adapt_B = g.lo + (bin_B + u_B) * g.width
    l_B = jnp.where(self._active(state), l_adapt_B, self.base_law.sample(base_key, batch_size))
    l_B = jnp.clip(l_B, g.lo, g.hi)
    return jnp.exp(l_B), self.loss_weights(state, l_B)

  def density(self, state: State, log_sigma_G: Array) -> Array:
    adapt_G = self.grid.step_density(state["pmf_K"], log_sigma_G)
    return jnp.where(self._active(state), adapt_G, self.base_density(log_sigma_G))

  def loss_weights(self, state: State, log_sigma_G: Array) -> Array:
    """The weight `sample` returns at each ln sigma: base / p with importance, else 1."""
    if self.importance:
      return self.importance_weight(state, log_sigma_G)
    return jnp.ones_like(log_sigma_G)

  def importance_weight(self, state: State, log_sigma_B: Array) -> Array:
    """base(l) / p(l): E_p[weight * L] = E_base[L] for any L (unbiased objective)."""
    p_B = self.density(state, log_sigma_B)
    return jnp.where(p_B > 0, self.base_density(log_sigma_B) / jnp.where(p_B > 0, p_B, 1.0), 0.0)

  def update(
    self, state: State, sigma_B: Array, err_B: Array, loss_B: Array
  ) -> tuple[State, dict[str, Array]]:
    stat_B = self.statistic(err_B, loss_B).astype(jnp.float32)
    l_B = jnp.log(sigma_B.astype(jnp.float32))
    ok_B = jnp.isfinite(stat_B) & jnp.isfinite(l_B)
    s_K, n_K = self.grid.record(l_B, stat_B, ok_B)
    sum_K = self.ema_beta * state["sum_K"] + s_K
    count_K = self.ema_beta * state["count_K"] + n_K
    num_updates = state["num_updates"] + 1
    new = {"sum_K": sum_K, "count_K": count_K, "num_updates": num_updates, "pmf_K": None}
    pmf_K = mix_floor(self.target(self.estimates(new)), self.floor)
    new["pmf_K"] = jnp.where(num_updates >= self.warmup_steps, pmf_K, state["pmf_K"])
    cdf_change = jnp.max(jnp.abs(jnp.cumsum(new["pmf_K"]) - jnp.cumsum(state["pmf_K"])))
    metrics = {f"{self.name}/cdf_change": cdf_change, f"{self.name}/dropped": jnp.sum(~ok_B)}
    return new, metrics


@dataclasses.dataclass(frozen=True)
class CDCD(Binned):
  """CDCD time warping (Dieleman et al. 2022, 'time warping').

  CDCD fits a monotone piecewise-linear F(t) to the loss as a function of the noise level and
  samples t = F^-1(u): the density is F' / (F(t_max) - F(t_min)), the slope of the loss curve.
  Here F is the least-squares non-decreasing (isotonic) fit of the per-bin mean of `signal`
  at the bin centers, pi_k proportional to its slope dF/dl. F is a CDF up to scale, so the
  law is the same whichever noise coordinate the slope is taken in. `signal` = err (default:
  the unweighted error, analogue of CDCD's unweighted cross-entropy) or loss (= w err).
  No importance weights: CDCD changes the objective's weighting on purpose.
  """

  signal: str = "err"
  name: ClassVar[str] = "cdcd"

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "CDCD":
    signal = config.schedule.adaptive.cdcd_signal
    if signal not in ("err", "loss"):
      raise ValueError(f"schedule.adaptive.cdcd_signal must be err|loss, got {signal!r}")
    return super().from_config(config, signal=signal)

  def statistic(self, err_B: Array, loss_B: Array) -> Array:
    return err_B if self.signal == "err" else loss_B

  def target(self, est_K: Array) -> Array:
    f_K = isotonic_increasing(est_K)
    return jnp.gradient(f_K) / self.grid.width  # dF/dl at the bin centers


@dataclasses.dataclass(frozen=True)
class VDMPP(Binned):
  """VDM++ adaptive importance sampling (Kingma & Gao 2023, adaptive noise schedule).

  VDM++ samples lambda from p(lambda) proportional to w(lambda) E[loss | lambda] and
  weights each example by w / p, leaving the weighted objective unchanged. Our objective is
  E_{l ~ base}[loss] = int base(l) E[loss | l] dl, so the VDM++ weighting function is the base
  density: pi_k proportional to base_k * mean(loss)_k (loss = w(sigma) err), importance weight
  base(l) / pi(l). With base = loguniform, pi_k is proportional to the per-bin mean loss.
  """

  name: ClassVar[str] = "vdmpp"
  importance: ClassVar[bool] = True

  def statistic(self, err_B: Array, loss_B: Array) -> Array:
    return loss_B

  def target(self, est_K: Array) -> Array:
    return self._base_pmf() * est_K


@dataclasses.dataclass(frozen=True)
class IDDPM(Binned):
  """Improved-DDPM loss-aware sampling (Nichol & Dhariwal 2021, eq. 18).

  iDDPM samples t with p_t proportional to sqrt(E[L_t^2]) (from a history of recent losses)
  and weights L_t / p_t, leaving the uniform-over-t objective unchanged. With our base in
  place of uniform-over-t: pi_k proportional to base_k * sqrt(mean(loss^2)_k), weight
  base(l) / pi(l). The history is the discounted per-bin mean (memory ~ 1 / (1 - beta)
  steps) and the floor is iDDPM's uniform mixing.
  """

  name: ClassVar[str] = "iddpm"
  importance: ClassVar[bool] = True

  def statistic(self, err_B: Array, loss_B: Array) -> Array:
    return jnp.square(loss_B)

  def target(self, est_K: Array) -> Array:
    return self._base_pmf() * jnp.sqrt(jnp.maximum(est_K, 0.0))


@dataclasses.dataclass(frozen=True)
class EDM2:
  """EDM2 learned per-sigma uncertainty weighting (Karras et al. 2024, 'loss weighting').

  It adapts the weight, not pi.

  sigma is drawn from the base log-normal (schedule.lognormal, untruncated as in EDM2) and
  lossweight_B = exp(-u(sigma_B)), so the trainer's mean(lossweight w err) has the network
  gradient of EDM2's loss exp(-u) w err + u. u is EDM2's 'logvar' head: a linear layer on
  fixed Fourier features of c_noise = ln(sigma) / 4,
    u(sigma) = b + <v, sqrt(2) cos(2 pi (f c_noise + phase))> / sqrt(C),  f ~ N(0, 1),
  phase ~ U(0, 1), v = b = 0 at init (unit weights). `update` takes one Adam step on
  mean_B(exp(-u(sigma_B)) loss_B + u(sigma_B)) over finite entries, loss_B held constant; its
  minimizer is u(sigma) = ln E[loss | sigma]. Params and Adam state live in the state.
  """

  p_mean: float = -1.2
  p_std: float = 1.2
  channels: int = 128
  lr: float = 3e-3
  feature_seed: int = 0

  # schedule.* sections read (resume.py compares only these): adaptive.edm2_*, the log-normal
  config_sections: ClassVar[tuple[str, ...]] = ("adaptive", "lognormal")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "EDM2":
    a, ln = config.schedule.adaptive, config.schedule.lognormal
    if int(a.edm2_channels) < 1:
      raise ValueError(f"schedule.adaptive.edm2_channels must be >= 1, got {a.edm2_channels!r}")
    return cls(
      p_mean=finite(ln.p_mean, "schedule.lognormal.p_mean"),
      p_std=positive(ln.p_std, "schedule.lognormal.p_std"),
      channels=int(a.edm2_channels),
      lr=positive(a.edm2_lr, "schedule.adaptive.edm2_lr"),
    )

  @property
  def law(self) -> log_sigma.LogNormalLaw:
    """The base log-normal of ln sigma, not truncated (as in EDM2)."""
    return log_sigma.LogNormalLaw(self.p_mean, self.p_std)

  def _optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.lr)

  def init_state(self) -> State:
    freq_key, phase_key = jax.random.split(jax.random.key(self.feature_seed))
    c = self.channels
    params = {"v_C": jnp.zeros((c,), jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return {
      "freq_C": jax.random.normal(freq_key, (c,), jnp.float32),
      "phase_C": jax.random.uniform(phase_key, (c,), jnp.float32),
      "params": params,
      "opt_state": self._optimizer().init(params),
    }

  def log_variance(self, state: State, sigma_B: Array, params: State | None = None) -> Array:
    """u(sigma_B) with the state's params (or `params`)."""
    p = state["params"] if params is None else params
    c_noise_B = jnp.log(sigma_B) / 4.0
    phase_BC = c_noise_B[:, None] * state["freq_C"] + state["phase_C"]
    feat_BC = math.sqrt(2.0) * jnp.cos(2.0 * math.pi * phase_BC)
    return p["b"] + feat_BC @ p["v_C"] / math.sqrt(self.channels)

  def sample(self, state: State, key: Array, batch_size: int) -> tuple[Array, Array]:
    sigma_B = jnp.exp(self.law.sample(key, batch_size))
    u_B = self.log_variance(state, sigma_B)  # the train step differentiates the network only
    return sigma_B, jnp.exp(-u_B)

  def density(self, state: State, log_sigma_G: Array) -> Array:
    del state
    return self.law.density(log_sigma_G)

  def loss_weights(self, state: State, log_sigma_G: Array) -> Array:
    """exp(-u(sigma)), the weight `sample` returns (EDM2's learned uncertainty)."""
    return jnp.exp(-self.log_variance(state, jnp.exp(log_sigma_G)))

  def update(
    self, state: State, sigma_B: Array, err_B: Array, loss_B: Array
  ) -> tuple[State, dict[str, Array]]:
    del err_B
    loss_B = loss_B.astype(jnp.float32)
    sigma_B = sigma_B.astype(jnp.float32)
    ok_B = jnp.isfinite(loss_B) & jnp.isfinite(sigma_B) & (sigma_B > 0)
    safe_sigma_B = jnp.where(ok_B, sigma_B, 1.0)
    safe_loss_B = jnp.where(ok_B, loss_B, 0.0)
    n = jnp.sum(ok_B)

    def objective(params):
      u_B = self.log_variance(state, safe_sigma_B, params)
      term_B = jnp.exp(-u_B) * safe_loss_B + u_B
      return jnp.sum(jnp.where(ok_B, term_B, 0.0)) / jnp.maximum(n, 1)

    value, grads = jax.value_and_grad(objective)(state["params"])
    updates, opt_state = self._optimizer().update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    keep = n == 0  # nothing finite to learn from: leave params and Adam state as they were
    new = {**state, "params": params, "opt_state": opt_state}
    new = jax.tree.map(lambda old, upd: jnp.where(keep, old, upd), state, new)
    metrics = {"edm2/objective": value, "edm2/dropped": jnp.sum(~ok_B)}
    return new, metrics
