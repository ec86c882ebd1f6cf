"""Solvers of the EDM probability-flow ODE / SDE on device, and the sigma grid of config.sampler.

`sample` runs EDM Algorithm 1 (deterministic Heun), `exp_heun` (the same two evaluations per
step, combined stably; below), plain Euler, or Algorithm 2 (stochastic Heun with churn;
Karras et al. 2022) as a `lax.fori_loop` over a sigma grid from
`sigma_grids` (Karras rho grid or InfoGrid, docs/method.md section 5). The denoiser is any
`denoise_fn(x_B..., sigma_B) -> D(x; sigma)`, e.g. `edm.denoise` with EMA params closed over.

Network evaluations for a grid of N nonzero levels plus the final 0 (`num_evaluations`):
heun, exp_heun and stochastic take N steps, each with a second-order correction except the
last one (to sigma = 0), so 2N - 1 evaluations (18 levels -> 35); euler takes N.

Why exp_heun. The ODE dx/dsigma = (x - D(x; sigma)) / sigma is d(x/sigma) = D d(1/sigma), so
with a = sigma_next / sigma and D constant over a step, x' = a x + (1 - a) D: that is the
Euler step itself, written in terms of the denoiser. exp_heun averages the denoiser at both
ends (the trapezoid rule in 1/sigma, second order, as DPM-Solver++ does in its variable):
x' = a x + (1 - a) (D0 + D1) / 2, a convex combination of x and denoiser outputs for every
ratio. EDM's Heun average of slopes instead equals Euler plus ((sigma/sigma_next) - 1) / 2
times (D0 - D1): on a step from 80 to 1 (InfoGrid's first step) the change of the denoiser is
multiplied by about 40 and samples of data in [-1, 1] land in [-50, 50] (tests/solvers_test.py,
with an exact Gaussian denoiser). `check_step_ratios` warns when heun or stochastic meets a
grid whose second-order steps have a larger ratio than we tested (`HEUN_TESTED_RATIO`).

Sharding: pass `sharding` (e.g. NamedSharding(mesh, P('data'))) to lay the batch out over
devices; the noise draws do not depend on the layout (threefry is partitionable), so sharded
and unsharded runs give the same samples.
"""

import functools
import logging
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from infonoise_jax import log_sigma, schedules
from infonoise_jax.sigma_grids import bin_edges, infogrid_sigmas, karras_sigmas

__all__ = [
  "METHODS",
  "GRIDS",
  "bin_edges",
  "check_grid",
  "infogrid_sigmas",
  "karras_sigmas",
  "make_sigmas",
  "num_evaluations",
  "sample",
  "validate_sampler_config",
]

Array = jax.Array
DenoiseFn = Callable[[Array, Array], Array]
Profile = tuple[Array, Array]  # (log_sigma_K, rate_K), e.g. InfoNoise.profile(state)

logger = logging.getLogger(__name__)

METHODS = ("heun", "exp_heun", "euler", "stochastic")
# Largest sigma ratio of a second-order step for which EDM's Heun (heun, stochastic) was
# checked against the exact solution (Karras 18 steps: 3.8; rescaled InfoGrid 18 steps: 25).
HEUN_TESTED_RATIO = 30.0
GRIDS = ("karras", "infogrid", "infogrid_rescaled")


def num_evaluations(num_steps: int, method: str) -> int:
  """Network evaluations of `sample` on a grid of `num_steps` nonzero levels plus a final 0."""
  _check_method(method)
  return num_steps if method == "euler" else 2 * num_steps - 1


def sample(
  denoise_fn: DenoiseFn,
  key: Array,
  shape: tuple[int, ...],
  sigmas: Array,
  method: str = "heun",
  s_churn: float = 0.0,
  s_tmin: float = 0.0,
  s_tmax: float = float("inf"),
  s_noise: float = 1.0,
  sharding: jax.sharding.Sharding | None = None,
) -> Array:
  """Draws samples x_B... of `shape` by integrating from sigmas[0] down to sigmas[-1].

  Args:
    denoise_fn: D(x_B...; sigma_B) with sigma_B of shape (B,) = (shape[0],).
    key: PRNG key; split into the initial noise and (stochastic) per-step churn noise.
    shape: batch shape, leading axis the batch.
    sigmas: descending grid of N + 1 entries, normally ending in 0 (`make_sigmas`).
    method: 'heun' (EDM Alg. 1), 'exp_heun' (module docstring), 'euler', or 'stochastic'
      (EDM Alg. 2).
    s_churn, s_tmin, s_tmax, s_noise: Alg. 2 settings (ignored unless stochastic).
    sharding: optional layout of the batch (applied to the state at every step).

  Returns the final x, float32, of `shape`. Jittable (shape, method are static).
  """
  _check_method(method)
  num_steps = sigmas.shape[0] - 1
  if num_steps < 1:
    raise ValueError(f"sigmas needs at least 2 entries (one step), got {sigmas.shape[0]}")
  sigmas = jnp.asarray(sigmas, jnp.float32)
  init_key, churn_key = jax.random.split(key)
  constrain = (lambda x: x) if sharding is None else _constrainer(sharding)
  # Alg. 1/2 line 2: x_0 ~ N(0, sigma_0^2 I).
  x = constrain(sigmas[0] * jax.random.normal(init_key, shape, jnp.float32))
  # Alg. 2: gamma_i = min(S_churn / N, sqrt(2) - 1) where sigma_i in [S_tmin, S_tmax].
  gamma_max = min(s_churn / num_steps, math.sqrt(2.0) - 1.0) if method == "stochastic" else 0.0
  step_fn = functools.partial(
    _step,
    denoise_fn,
    gamma_max=gamma_max,
    s_tmin=s_tmin,
    s_tmax=s_tmax,
    s_noise=s_noise,
    denoiser_form=method == "exp_heun",
  )

  def step(i, x, second_order):
    key_i = jax.random.fold_in(churn_key, i)
    return constrain(step_fn(x, sigmas[i], sigmas[i + 1], key_i, second_order))

  second_order = method != "euler"
  x = jax.lax.fori_loop(0, num_steps - 1, lambda i, x: step(i, x, second_order), x)
  # The last step (to sigma = 0 on our grids) is first order (Alg. 1 line 7: only if t_{i+1} != 0).
  return step(num_steps - 1, x, False)


def _step(
  denoise_fn: DenoiseFn,
  x: Array,
  sigma_cur: Array,
  sigma_next: Array,
  key: Array,
  second_order: bool,
  gamma_max: float,
  s_tmin: float,
  s_tmax: float,
  s_noise: float,
  denoiser_form: bool = False,
) -> Array:
  """One step of EDM Alg. 2 (Alg. 1 when gamma_max = 0; Euler when not second_order); with
  `denoiser_form`, the second-order update of exp_heun (module docstring)."""
  batch = x.shape[0]
  if gamma_max > 0:
    in_range = (sigma_cur >= s_tmin) & (sigma_cur <= s_tmax)
    gamma = jnp.where(in_range, gamma_max, 0.0)
    sigma_hat = sigma_cur * (1.0 + gamma)  # Alg. 2 line 5
    eps = s_noise * jax.random.normal(key, x.shape, x.dtype)  # line 4: eps ~ N(0, S_noise^2 I)
    # line 6: x_hat = x + sqrt(sigma_hat^2 - sigma^2) eps, written so it cannot go negative.
    x_hat = x + sigma_cur * jnp.sqrt(gamma * (2.0 + gamma)) * eps
  else:
    sigma_hat, x_hat = sigma_cur, x
  if denoiser_form:
    a = sigma_next / sigma_hat
    d0 = denoise_fn(x_hat, jnp.full((batch,), sigma_hat))
    x_next = a * x_hat + (1.0 - a) * d0  # = the Euler step below
    if second_order:  # trapezoid in 1/sigma: x' = a x + (1 - a) (D0 + D1) / 2
      d1 = denoise_fn(x_next, jnp.full((batch,), sigma_next))
      x_next = a * x_hat + (1.0 - a) * 0.5 * (d0 + d1)
    return x_next
  # Euler step, Alg. 1 lines 4-5: d = (x - D(x; sigma)) / sigma.
  d_cur = (x_hat - denoise_fn(x_hat, jnp.full((batch,), sigma_hat))) / sigma_hat
  x_next = x_hat + (sigma_next - sigma_hat) * d_cur
  if second_order:
    # Heun correction, Alg. 1 lines 7-8: average the slopes at both ends.
    d_next = (x_next - denoise_fn(x_next, jnp.full((batch,), sigma_next))) / sigma_next
    x_next = x_hat + (sigma_next - sigma_hat) * 0.5 * (d_cur + d_next)
  return x_next


def _constrainer(sharding: jax.sharding.Sharding) -> Callable[[Array], Array]:
  return lambda x: jax.lax.with_sharding_constraint(x, sharding)


def validate_sampler_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the offending key of config.sampler / config.edm."""
  s = config.sampler
  if s.name not in METHODS:
    raise ValueError(f"sampler.name must be one of {METHODS}, got {s.name!r}")
  if s.grid not in GRIDS:
    raise ValueError(f"sampler.grid must be one of {GRIDS}, got {s.grid!r}")
  if isinstance(s.num_steps, bool) or not isinstance(s.num_steps, int) or s.num_steps < 1:
    raise ValueError(f"sampler.num_steps must be an int >= 1, got {s.num_steps!r}")
  checks = [
    ("sampler.rho", s.rho > 0, s.rho, "> 0"),
    # inf is EDM's largest churn, gamma = min(s_churn / N, sqrt(2) - 1)
    ("sampler.s_churn", s.s_churn >= 0, s.s_churn, ">= 0"),
    ("sampler.s_noise", 0 <= s.s_noise < math.inf, s.s_noise, "a finite number >= 0"),
    ("sampler.s_tmin", 0 <= s.s_tmin <= s.s_tmax, s.s_tmin, ">= 0 and <= sampler.s_tmax"),
  ]
  for name, ok, value, want in checks:
    if not ok:
      raise ValueError(f"{name} must be {want}, got {value!r}")
  lo, hi = log_sigma.sigma_range(config)
  check_grid(config)
  if s.grid == "karras":  # rho near 0 overflowed sigma^(1/rho) only when sampling, after training
    grid = np.asarray(karras_sigmas(s.num_steps, lo, hi, s.rho))
    if not (np.all(np.isfinite(grid)) and np.all(np.diff(grid) < 0)):
      raise ValueError(
        f"sampler.rho={s.rho!r} gives a Karras grid that overflows float32 (sigma^(1/rho) for "
        f"sigma in [{lo:g}, {hi:g}]); use rho >= 1 (EDM: 7)"
      )
  if s.name == "stochastic" and s.s_churn == 0 and ("churn", "stochastic", 0) not in _warned:
    _warned.add(("churn", "stochastic", 0))
    logger.warning(
      "sampler.name='stochastic' with sampler.s_churn=0 adds no noise: EDM's Algorithm 2 is "
      "then its Algorithm 1, the same samples as sampler.name='heun'. Set a churn, e.g. EDM's "
      "ImageNet setting sampler.s_churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.003 "
      "(--config.sampler.s_churn=40 when training, --set sampler.s_churn=40 for the sample "
      "and evaluate commands)."
    )
  if s.num_steps == 1 and ("one step", s.name, 1) not in _warned:
    _warned.add(("one step", s.name, 1))
    logger.warning(
      "sampler.num_steps=1: one step from sigma_max=%g straight to sigma=0 returns the "
      "denoiser's output at sigma_max, which is close to the mean of the data, not a sample. "
      "EDM samples with 18 steps (35 network evaluations); a few steps already give samples.",
      config.edm.sigma_max,
    )
  key = ("churn", s.name, 1)
  if s.name != "stochastic" and s.s_churn > 0 and key not in _warned:
    _warned.add(key)
    logger.warning(
      "sampler.s_churn=%g has no effect with sampler.name=%r: only sampler.name='stochastic' "
      "(EDM's Algorithm 2) adds churn, so these samples are %s's, the same as with s_churn=0. "
      "Use --method=stochastic for the sample and evaluate commands "
      "(--config.sampler.name=stochastic when training), or leave s_churn at 0.",
      s.s_churn,
      s.name,
      s.name,
    )


def check_grid(config: ml_collections.ConfigDict, grid: str | None = None) -> None:
  """Raises unless `grid` (default sampler.grid) can be built for the run's schedule: the
  InfoGrid grids need a schedule that learns a profile (`schedules.has_profile`)."""
  grid = grid or config.sampler.grid
  if grid.startswith("infogrid") and not schedules.has_profile(config.schedule.name):
    raise ValueError(
      f"sampler.grid={grid!r} needs a learned information profile, but schedule.name="
      f"{config.schedule.name!r} learns none (those that do: {', '.join(schedules.PROFILED)}); "
      "use the karras grid (--grid=karras, or --config.sampler.grid=karras)"
    )


def make_sigmas(config: ml_collections.ConfigDict, profile: Profile | None = None) -> Array:
  """The sigma grid of config.sampler over [edm.sigma_min, edm.sigma_max], final 0 appended.

  `profile` = (log_sigma_K, rate_K) is required for the infogrid grids (docs/method.md section 5).
  """
  validate_sampler_config(config)
  s, edm = config.sampler, config.edm
  if s.grid == "karras":
    sigmas = karras_sigmas(s.num_steps, edm.sigma_min, edm.sigma_max, s.rho)
    check_step_ratios(sigmas, s.name, s.grid)
    return sigmas
  if profile is None:
    raise ValueError(
      f"sampler.grid={s.grid!r} needs a profile (log_sigma_K, rate_K), e.g. from "
      "InfoNoise.profile(state); use sampler.grid='karras' otherwise"
    )
  log_sigma_K, rate_K = profile
  sigmas = infogrid_sigmas(
    log_sigma_K,
    rate_K,
    s.num_steps,
    rescaled=s.grid == "infogrid_rescaled",
    sigma_min=edm.sigma_min,
    sigma_max=edm.sigma_max,
  )
  if not check_profile_gaps(sigmas, s.grid, s.name):
    check_step_ratios(sigmas, s.name, s.grid)
  return sigmas


def _second_order_ratios(sigmas: Array) -> np.ndarray:
  """sigma_i / sigma_{i+1} of the steps that get a second-order correction (all but the last,
  which goes to sigma = 0); empty for a grid of one step."""
  sigma_N = np.asarray(sigmas, np.float64)
  return sigma_N[:-2] / sigma_N[1:-1]


def max_step_ratio(sigmas: Array) -> float:
  """Largest sigma_i / sigma_{i+1} over the steps that get a second-order correction."""
  ratios = _second_order_ratios(sigmas)
  return float(ratios.max()) if ratios.size else 1.0


_warned: set[tuple[str, str, int]] = set()


def check_step_ratios(sigmas: Array, method: str, grid: str = "") -> bool:
  """Warns (once per grid, method and ratio) when EDM's Heun meets larger step ratios than
  tested; returns True if it warned. exp_heun and euler are stable for any ratio."""
  ratio = max_step_ratio(sigmas)
  if method not in ("heun", "stochastic") or ratio <= HEUN_TESTED_RATIO:
    return False
  key = (grid, method, round(ratio))
  if key not in _warned:
    _warned.add(key)
    logger.warning(
      "sampler.name=%r on grid %r: a step has sigma ratio %.0f (tested up to %.0f). EDM's Heun "
      "multiplies the denoiser's change over such a step by about %.0f and samples can leave "
      "the data range; use sampler.name='exp_heun' (--config.sampler.name=exp_heun, or "
      "--method=exp_heun for the sample and evaluate commands), which is stable for any ratio.",
      method,
      grid,
      ratio,
      HEUN_TESTED_RATIO,
      (ratio - 1) / 2,
    )
  return True


def widest_step(sigmas: Array) -> tuple[float, float]:
  """(sigma_i, sigma_{i+1}) of the step with the largest ratio among those `max_step_ratio`
  looks at (all but the last, which goes to 0); (sigma_0, sigma_1) for grids of one step."""
  sigma_N, ratios = np.asarray(sigmas, np.float64), _second_order_ratios(sigmas)
  if not ratios.size:
    return float(sigma_N[0]), float(sigma_N[-1])
  i = int(np.argmax(ratios))
  return float(sigma_N[i]), float(sigma_N[i + 1])


def check_profile_gaps(sigmas: Array, grid: str, method: str = "") -> bool:
  """Warns (once per grid) when an InfoGrid crosses a range of sigma wider than
  `HEUN_TESTED_RATIO` in one second-order step, with any solver; returns True for such a grid.

  The grid puts a level wherever its density has mass, so a wide step lies where the density
  is small, and one step's two network evaluations have to carry the whole range there. A
  stable solver stays in the data range, but on learned profiles, whose mass sits at the
  low-noise end where the network's own error dominates (docs/method.md section 5), every
  InfoGrid drew far worse samples than the Karras grid (experiments/RESULTS.md section 17)."""
  if not grid.startswith("infogrid"):
    return False
  ratio = max_step_ratio(sigmas)
  if ratio <= HEUN_TESTED_RATIO:
    return False
  heun = method in ("heun", "stochastic")
  key = (grid, "gap", int(heun))  # a Heun sampler still hears of its amplification
  if key not in _warned:
    _warned.add(key)
    hi, lo = widest_step(sigmas)
    amplified = (
      f" EDM's Heun multiplies the denoiser's change over that step by about {(ratio - 1) / 2:.0f}"
      " and samples can leave the data range (sampler.name='exp_heun' stays inside it:"
      " --method=exp_heun to sample / evaluate)."
      if heun
      else ""
    )
    logger.warning(
      "sampler.grid=%r crosses sigma %.3g -> %.3g in one step (ratio %.0f, tested up to %.0f): "
      "the grid places no level in between, so one step's network evaluations span that "
      "range.%s On learned profiles every InfoGrid drew far worse samples than the Karras grid "
      "(experiments/RESULTS.md section 17); use sampler.grid='karras' (--grid=karras to "
      "sample / evaluate, --config.sampler.grid=karras to train) unless the profile is exact.",
      grid,
      hi,
      lo,
      ratio,
      HEUN_TESTED_RATIO,
      amplified,
    )
  return True


def _check_method(method: str) -> None:
  if method not in METHODS:
    raise ValueError(f"sampler.name (method) must be one of {METHODS}, got {method!r}")
