"""Fixed training noise distributions: the hand-tuned peers InfoNoise is compared against.

Each class draws sigma from a fixed law and returns unit loss weights (docs/method.md section 6).
`density` is the exact density of ln(sigma) under `sample` (tests check this by goodness of
fit). With l = ln sigma:

  lognormal    l ~ N(p_mean, p_std^2)                                  (EDM, Karras et al. 2022)
  loguniform   l ~ U[ln sigma_min, ln sigma_max]
  logitnormal  logit(t) ~ N(mean, std^2), sigma = t / (1 - t)          (SD3, Esser et al. 2024)
               Since ln(t / (1 - t)) = logit(t), this is l ~ N(mean, std^2): the same law as
               `lognormal` with (p_mean, p_std) = (mean, std); kept under its own name.
  laplace      lambda = -2 l ~ Laplace(mu, b)  =>  l ~ Laplace(-mu/2, b/2)  (Hang et al. 2024)
  cosine       t ~ U[t_lo, t_hi], sigma = e^shift tan(pi t / 2)       (iDDPM cosine, shifted)
               t_lo, t_hi = (2/pi) atan(sigma_{min,max} e^-shift): truncated to [sigma_min,
               sigma_max]. Then p(l) = 1 / (pi cosh(l - shift) (t_hi - t_lo)) on that range.
"""

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections

from infonoise_jax import log_sigma
from infonoise_jax.schedules.base import Array, State, StatelessSchedule, finite, positive


@dataclasses.dataclass(frozen=True)
class LogNormal(StatelessSchedule):
  """EDM: ln sigma ~ N(p_mean, p_std^2) (Karras et al. 2022, eq. in Table 1, 'training')."""

  p_mean: float = -1.2
  p_std: float = 1.2

  # The schedule.* sections from_config reads (resume.py compares only these on a resume).
  config_sections: ClassVar[tuple[str, ...]] = ("lognormal",)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "LogNormal":
    c = config.schedule.lognormal
    return cls(
      p_mean=finite(c.p_mean, "schedule.lognormal.p_mean"),
      p_std=positive(c.p_std, "schedule.lognormal.p_std"),
    )

  @property
  def law(self) -> log_sigma.LogNormalLaw:
    return log_sigma.LogNormalLaw(self.p_mean, self.p_std)

  def sample_sigma(self, key: Array, batch_size: int) -> Array:
    return jnp.exp(self.law.sample(key, batch_size))

  def density(self, state: State, log_sigma_G: Array) -> Array:
    del state
    return self.law.density(log_sigma_G)


@dataclasses.dataclass(frozen=True)
class LogUniform(StatelessSchedule):
  """ln sigma ~ U[ln sigma_min, ln sigma_max] (edm.sigma_min / edm.sigma_max)."""

  sigma_min: float = 0.002
  sigma_max: float = 80.0

  config_sections: ClassVar[tuple[str, ...]] = ()  # edm.sigma_min/max only

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "LogUniform":
    lo, hi = log_sigma.sigma_range(config)
    return cls(sigma_min=lo, sigma_max=hi)

  @property
  def law(self) -> log_sigma.LogUniformLaw:
    return log_sigma.LogUniformLaw(math.log(self.sigma_min), math.log(self.sigma_max))

  def sample_sigma(self, key: Array, batch_size: int) -> Array:
    return jnp.exp(self.law.sample(key, batch_size))

  def density(self, state: State, log_sigma_G: Array) -> Array:
    del state
    return self.law.density(log_sigma_G)


@dataclasses.dataclass(frozen=True)
class LogitNormal(LogNormal):
  """SD3: logit(t) ~ N(mean, std^2), sigma = t/(1-t).

  ln(t/(1-t)) = logit(t), so this is exactly ln sigma ~ N(mean, std^2): the log-normal law
  (sampled as exp(logit t), which stays finite where t would round to 0 or 1), with its own
  config section and SD3's defaults (0, 1).
  """

  p_mean: float = 0.0
  p_std: float = 1.0

  config_sections: ClassVar[tuple[str, ...]] = ("logitnormal",)  # not LogNormal's section

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "LogitNormal":
    c = config.schedule.logitnormal
    return cls(
      p_mean=finite(c.mean, "schedule.logitnormal.mean"),
      p_std=positive(c.std, "schedule.logitnormal.std"),
    )


@dataclasses.dataclass(frozen=True)
class Laplace(StatelessSchedule):
  """Hang et al. 2024: log-SNR lambda = -2 ln sigma ~ Laplace(mu, b)."""

  mu: float = 0.0
  b: float = 0.5

  config_sections: ClassVar[tuple[str, ...]] = ("laplace",)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Laplace":
    c = config.schedule.laplace
    return cls(mu=finite(c.mu, "schedule.laplace.mu"), b=positive(c.b, "schedule.laplace.b"))

  def sample_sigma(self, key: Array, batch_size: int) -> Array:
    lambda_B = self.mu + self.b * jax.random.laplace(key, (batch_size,), jnp.float32)
    return jnp.exp(-0.5 * lambda_B)

  def density(self, state: State, log_sigma_G: Array) -> Array:
    del state
    # p(l) = p_lambda(-2 l) |d lambda / d l| = (1 / b) exp(-|-2 l - mu| / b).
    return jnp.exp(-jnp.abs(-2.0 * log_sigma_G - self.mu) / self.b) / self.b


COSINE_SHIFT_MARGIN = 5.0  # ln sigma units the cosine law's centre may lie outside the range


@dataclasses.dataclass(frozen=True)
class Cosine(StatelessSchedule):
  """sigma = e^shift tan(pi t / 2), t uniform, truncated to [sigma_min, sigma_max].

  Shift 0 is the iDDPM cosine schedule alpha_bar = cos^2(pi t / 2) (Nichol & Dhariwal 2021,
  eq. 17 with s = 0), since sigma^2 = (1 - alpha_bar) / alpha_bar; a shift moves the log-SNR
  by -2 shift (Hoogeboom et al. 2023). Density of l: 1 / (pi cosh(l - shift) (t_hi - t_lo)).
  """

  shift: float = 0.0
  sigma_min: float = 0.002
  sigma_max: float = 80.0

  config_sections: ClassVar[tuple[str, ...]] = ("cosine",)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Cosine":
    lo, hi = log_sigma.sigma_range(config)
    shift = finite(config.schedule.cosine.shift, "schedule.cosine.shift")
    # Further out, t's range [t_lo, t_hi] shrinks below float32's resolution (near t = 1) or
    # e^shift overflows: the truncated law degenerates to one end of the range.
    low, high = math.log(lo) - COSINE_SHIFT_MARGIN, math.log(hi) + COSINE_SHIFT_MARGIN
    if not low <= shift <= high:
      raise ValueError(
        f"schedule.cosine.shift={shift:g} puts the law's centre e^shift more than "
        f"e^{COSINE_SHIFT_MARGIN:g} outside [edm.sigma_min, edm.sigma_max] = [{lo:g}, {hi:g}], "
        f"where truncating it leaves almost nothing; use a shift in [{low:.2f}, {high:.2f}] "
        "(0: iDDPM's cosine)"
      )
    return cls(shift=shift, sigma_min=lo, sigma_max=hi)

  def _t_range(self) -> tuple[float, float]:
    scale = math.exp(-self.shift)
    t_lo = 2.0 / math.pi * math.atan(self.sigma_min * scale)
    t_hi = 2.0 / math.pi * math.atan(self.sigma_max * scale)
    return t_lo, t_hi

  def sample_sigma(self, key: Array, batch_size: int) -> Array:
    t_lo, t_hi = self._t_range()
    t_B = jax.random.uniform(key, (batch_size,), jnp.float32, t_lo, t_hi)
    sigma_B = math.exp(self.shift) * jnp.tan(0.5 * math.pi * t_B)
    return jnp.clip(sigma_B, self.sigma_min, self.sigma_max)  # float32 rounding only

  def density(self, state: State, log_sigma_G: Array) -> Array:
    del state
    t_lo, t_hi = self._t_range()
    # dt/dl = (2/pi) d atan(e^(l - shift)) / dl = 1 / (pi cosh(l - shift)).
    pdf_G = 1.0 / (math.pi * jnp.cosh(log_sigma_G - self.shift) * (t_hi - t_lo))
    lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
    return jnp.where((log_sigma_G >= lo) & (log_sigma_G <= hi), pdf_G, 0.0)
