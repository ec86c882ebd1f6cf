"""Sampling discretizations in sigma: the Karras rho grid and InfoGrid (docs/method.md section 5).

Every grid has `num_steps` noise levels sigma_0 > ... > sigma_{N-1} > 0 followed by a final 0,
so it has N + 1 entries and the sampler takes N steps (the last one from sigma_{N-1} to 0),
as in EDM (Karras et al. 2022, eq. 5 and Algorithm 1).

InfoGrid places the levels by the information profile instead of a fixed power law. The
profile is given on bin centres in ln sigma as `rate_K`, the (gated) conditional-entropy rate
per unit ln sigma, r = dH/d ln sigma = sigma dH/dsigma >= 0 (docs/method.md section 3), treated as
piecewise constant per bin (bin edges midway between centres, the outer edges half a spacing
beyond the outer centres). With F the normalized CDF of that rate over [sigma_min, sigma_max],
the levels are

  sigma_i = F^{-1}(1 - i / (N - 1)),  i = 0 .. N-1,

so sigma_0 = sigma_max, sigma_{N-1} = sigma_min and every step between consecutive nonzero
levels resolves the same share 1/(N-1) of the profile mass ("entropic time").

Change of variables. A CDF does not depend on the variable it is written in: integrating
dH/dsigma over sigma or r = sigma dH/dsigma over ln sigma gives the same F. So the plain grid
uses density r per unit ln sigma, piecewise constant per bin, and F is piecewise linear in
ln sigma over the bin edges. The rescaled variant uses density proportional to
sigma * dH/dsigma = r *per unit sigma*; per unit ln sigma that is sigma * r. Within a bin r is
constant, so this density is constant in sigma and its F is piecewise linear in *sigma* over the
bin edges (bin k holds mass r_k (e^{edge_{k+1}} - e^{edge_k})). It moves levels towards high
noise relative to the plain grid.
"""

import numbers

import jax.numpy as jnp

from infonoise_jax import log_sigma

Array = jnp.ndarray


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Array:
  """EDM eq. 5: sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, then 0.

  Returns sigma_N of shape (num_steps + 1,), descending from sigma_max to sigma_min, with a
  final 0. `num_steps` = 1 gives [sigma_max, 0].
  """
  _check_num_steps(num_steps)
  _check_range(sigma_min, sigma_max)
  i_N = jnp.arange(num_steps, dtype=jnp.float32)
  frac_N = i_N / max(num_steps - 1, 1)
  inv_rho = 1.0 / rho
  smax_r = jnp.asarray(sigma_max, jnp.float32) ** inv_rho
  smin_r = jnp.asarray(sigma_min, jnp.float32) ** inv_rho
  sigma_N = (smax_r + frac_N * (smin_r - smax_r)) ** rho  # eq. 5
  # Pin the end points exactly (rounding of x^(1/rho)^rho can move them by an ulp).
  sigma_N = sigma_N.at[0].set(sigma_max)
  if num_steps > 1:
    sigma_N = sigma_N.at[-1].set(sigma_min)
  return jnp.concatenate([sigma_N, jnp.zeros((1,), jnp.float32)])


def bin_edges(log_sigma_K: Array) -> Array:
  """Edges (K + 1,) in ln sigma of bins with the given centres: midpoints, outer half-spacing."""
  c_K = jnp.asarray(log_sigma_K, jnp.float32)
  mid = 0.5 * (c_K[1:] + c_K[:-1])
  first = c_K[0] - 0.5 * (c_K[1] - c_K[0])
  last = c_K[-1] + 0.5 * (c_K[-1] - c_K[-2])
  return jnp.concatenate([first[None], mid, last[None]])


def infogrid_sigmas(
  log_sigma_K: Array,
  rate_K: Array,
  num_steps: int,
  rescaled: bool = False,
  sigma_min: float | Array | None = None,
  sigma_max: float | Array | None = None,
) -> Array:
  """InfoGrid (docs/method.md section 5): sigma_i = F^{-1}(1 - i/(N-1)), then a final 0.

  Args:
    log_sigma_K: bin centres in ln sigma, ascending, K >= 2.
    rate_K: profile per bin, the conditional-entropy rate per unit ln sigma (any positive
      scale; negative values are clipped to 0). If it has no mass inside the range the grid
      falls back to uniform spacing in the grid's coordinate (ln sigma, or sigma if rescaled).
    num_steps: N, number of nonzero levels.
    rescaled: use density proportional to sigma dH/dsigma per unit sigma (module docstring).
    sigma_min, sigma_max: range of the grid; the profile is truncated to it. Default: the outer
      bin edges of the profile.

  Returns:
    sigma_N of shape (num_steps + 1,): descending, sigma_0 = sigma_max, sigma_{N-1} =
    sigma_min, last entry 0.
  """
  _check_num_steps(num_steps)
  if jnp.ndim(log_sigma_K) != 1 or jnp.shape(log_sigma_K) != jnp.shape(rate_K):
    raise ValueError(
      f"log_sigma_K and rate_K must be 1-D of equal shape, got {jnp.shape(log_sigma_K)} and "
      f"{jnp.shape(rate_K)}"
    )
  if jnp.shape(log_sigma_K)[0] < 2:
    raise ValueError("infogrid_sigmas needs at least 2 profile bins")
  _check_range(sigma_min, sigma_max)
  edges_E = bin_edges(log_sigma_K)
  lo = edges_E[0] if sigma_min is None else jnp.log(jnp.asarray(sigma_min, jnp.float32))
  hi = edges_E[-1] if sigma_max is None else jnp.log(jnp.asarray(sigma_max, jnp.float32))
  edges_E = jnp.clip(edges_E, lo, hi)  # truncate the profile to [sigma_min, sigma_max]
  # Coordinate in which the density is piecewise constant (module docstring).
  u_E = jnp.exp(edges_E) if rescaled else edges_E
  width_K = jnp.diff(u_E)
  mass_K = jnp.maximum(jnp.asarray(rate_K, jnp.float32), 0.0) * width_K
  mass_K = jnp.where(jnp.sum(mass_K) > 0, mass_K, width_K)
  mass_K = mass_K / jnp.sum(mass_K)
  cdf_E = jnp.concatenate([jnp.zeros((1,), jnp.float32), jnp.cumsum(mass_K)])
  target_N = 1.0 - jnp.arange(num_steps, dtype=jnp.float32) / max(num_steps - 1, 1)
  u_N = _invert_piecewise_linear_cdf(u_E, cdf_E, mass_K, target_N)
  sigma_N = u_N if rescaled else jnp.exp(u_N)
  # Pin the end points to the range itself (exp(log(.)) may move them by an ulp).
  sigma_N = sigma_N.at[0].set(jnp.exp(hi) if sigma_max is None else sigma_max)
  if num_steps > 1:
    sigma_N = sigma_N.at[-1].set(jnp.exp(lo) if sigma_min is None else sigma_min)
  return jnp.concatenate([sigma_N, jnp.zeros((1,), jnp.float32)])


def _invert_piecewise_linear_cdf(u_E: Array, cdf_E: Array, mass_K: Array, t_N: Array) -> Array:
  """u with F(u) = t for F linear between knots (u_E, cdf_E); flat stretches are skipped."""
  num_bins = mass_K.shape[0]
  # First bin k with cdf_{k+1} >= t; for t > 0 that bin has cdf_k < t, hence mass_k > 0.
  k_N = jnp.clip(jnp.searchsorted(cdf_E[1:], t_N, side="left"), 0, num_bins - 1)
  m_N = mass_K[k_N]
  frac_N = jnp.where(m_N > 0, (t_N - cdf_E[k_N]) / jnp.where(m_N > 0, m_N, 1.0), 0.0)
  frac_N = jnp.clip(frac_N, 0.0, 1.0)
  return u_E[k_N] + frac_N * (u_E[k_N + 1] - u_E[k_N])


def _check_num_steps(num_steps: int) -> None:
  if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
    raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")


def _check_range(sigma_min, sigma_max) -> None:
  """Checks the range where it is concrete (Python numbers); traced values and None pass."""
  concrete = (int, float)
  if isinstance(sigma_min, concrete) and isinstance(sigma_max, concrete):
    log_sigma.check_range(sigma_min, sigma_max)
  elif isinstance(sigma_min, concrete) and not sigma_min > 0:
    raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
