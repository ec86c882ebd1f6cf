"""Information profiles: exact mmse curves, Bayes denoisers, gates and allocation diagnostics.

docs/method.md section 3. Conventions used throughout this module:

* **mmse is the per-dimension mean**, mmse(sigma) = E||x_0 - E[x_0|x_sigma]||^2 / d. This is what
  the InfoNoise estimator averages (`edm.per_example_error` takes the mean over data dims), so
  closed forms and estimates are directly comparable. Multiply by d for the I-MMSE sum.
* The entropy rate per unit ln sigma is q(sigma) = mmse(sigma) / sigma^2
  = dH(X_0|X_sigma) / d ln sigma (per dimension, in nats).
* Profiles live on grids uniform in ln sigma; "normalized" means the grid values sum to one
  (bin masses), so total variation between two profiles is 0.5 * sum |p - q|.

Closed forms: Gaussian N(mu, s^2 I) exactly; mixtures of isotropic Gaussians and finite point
sets (the empirical prior, a mixture with zero widths) by Monte Carlo over x_sigma of the exact
posterior covariance trace (Rao-Blackwellised: the only randomness is x_sigma); independent
fair bits {-a, a}^d by Gauss-Hermite quadrature of the 1-D integral.

`onset_pivot` is the automatic gate pivot rule (ours); its definition, properties and the
reason the literal reading is not the default are in docs/method.md ("The automatic gate
pivot").
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from infonoise_jax import edm

Array = jax.Array


# ----------------------------------------------------------------------------- closed forms
def gaussian_mmse(sigma: Array, std: float) -> Array:
  """Per-dim mmse of N(mu, std^2 I): std^2 sigma^2 / (std^2 + sigma^2) (docs/method.md 3)."""
  return std**2 * sigma**2 / (std**2 + sigma**2)


def gaussian_denoiser(x_BD: Array, sigma_B: Array, mean: Array | float, std: float) -> Array:
  """E[x_0|x_sigma] for N(mean, std^2 I): mean + std^2/(std^2+sigma^2) (x - mean)."""
  gain_B1 = (std**2 / (std**2 + sigma_B**2))[:, None]
  return mean + gain_B1 * (x_BD - mean)


def spectral_gaussian_mmse(sigma: Array, variances_D: Array) -> Array:
  """Per-dim mmse of a Gaussian with covariance eigenvalues `variances_D` (Eq. above, per mode)."""
  s2 = jnp.asarray(sigma)[..., None] ** 2
  return jnp.mean(variances_D * s2 / (variances_D + s2), axis=-1)


def power_law_spectrum(side: int, exponent: float = 2.0, std: float = 0.5) -> np.ndarray:
  """Eigenvalues of a stationary side x side image with power ~ 1/|f|^exponent, pixel std `std`.

  A natural-image-like continuous prior (natural images have exponent about 2).
  """
  f = np.fft.fftfreq(side) * side
  f2 = f[:, None] ** 2 + f[None, :] ** 2
  f2[0, 0] = 0.5  # finite DC power
  lam = f2 ** (-exponent / 2.0)
  return (lam * std**2 * lam.size / lam.sum()).ravel()


def _mixture_log_resp(x_BD, sigma_B, means_ND, stds_N, weights_N):
  """Log posterior responsibilities of the components given x_sigma."""
  var_BN = stds_N[None, :] ** 2 + sigma_B[:, None] ** 2
  d = x_BD.shape[-1]
  sq_BN = jnp.sum(jnp.square(x_BD[:, None, :] - means_ND[None]), axis=-1)
  logits_BN = jnp.log(weights_N)[None] - 0.5 * sq_BN / var_BN - 0.5 * d * jnp.log(var_BN)
  return jax.nn.log_softmax(logits_BN, axis=-1), var_BN


def mixture_denoiser(
  x_BD: Array, sigma_B: Array, means_ND: Array, stds_N: Array, weights_N: Array
) -> Array:
  """E[x_0|x_sigma] for sum_n w_n N(mu_n, s_n^2 I): softmax-weighted component posterior means.

  stds_N = 0 gives the empirical prior of the points means_ND.
  """
  log_r_BN, var_BN = _mixture_log_resp(x_BD, sigma_B, means_ND, stds_N, weights_N)
  gain_BN = stds_N[None] ** 2 / var_BN
  m_BND = means_ND[None] + gain_BN[..., None] * (x_BD[:, None, :] - means_ND[None])
  return jnp.einsum("bn,bnd->bd", jnp.exp(log_r_BN), m_BND)


def _mixture_mmse_one(key, sigma, means_ND, stds_N, weights_N, num_samples):
  n_S = jax.random.choice(key, means_ND.shape[0], (num_samples,), p=weights_N)
  z_SD = jax.random.normal(jax.random.fold_in(key, 1), (num_samples, means_ND.shape[1]))
  sigma_S = jnp.full((num_samples,), sigma)
  x_SD = means_ND[n_S] + jnp.sqrt(stds_N[n_S] ** 2 + sigma**2)[:, None] * z_SD
  log_r_SN, var_SN = _mixture_log_resp(x_SD, sigma_S, means_ND, stds_N, weights_N)
  gain_SN = stds_N[None] ** 2 / var_SN
  m_SND = means_ND[None] + gain_SN[..., None] * (x_SD[:, None, :] - means_ND[None])
  r_SN = jnp.exp(log_r_SN)
  m_SD = jnp.einsum("sn,snd->sd", r_SN, m_SND)
  # tr Cov(x0|x) = sum_n r_n (d v_n + ||m_n - m||^2), v_n = s_n^2 sigma^2 / (s_n^2 + sigma^2)
  spread_SN = jnp.sum(jnp.square(m_SND - m_SD[:, None, :]), axis=-1)
  tr_S = jnp.sum(r_SN * (means_ND.shape[1] * gain_SN * sigma**2 + spread_SN), axis=-1)
  return jnp.mean(tr_S) / means_ND.shape[1]


def mixture_mmse(
  key: Array,
  sigma_G: Array,
  means_ND: Array,
  stds_N: Array,
  weights_N: Array,
  num_samples: int = 4096,
) -> Array:
  """Per-dim mmse of an isotropic Gaussian mixture at each sigma (Monte Carlo over x_sigma).

  The posterior covariance trace is exact given x_sigma, so the only error is the MC average.
  """
  keys = jax.random.split(key, sigma_G.shape[0])
  fn = lambda ks: _mixture_mmse_one(ks[0], ks[1], means_ND, stds_N, weights_N, num_samples)
  return jax.lax.map(fn, (keys, sigma_G))


def point_set_mmse(key: Array, sigma_G: Array, points_ND: Array, num_samples: int = 4096) -> Array:
  """Per-dim mmse of the empirical prior (uniform over `points_ND`)."""
  n = points_ND.shape[0]
  return mixture_mmse(key, sigma_G, points_ND, jnp.zeros(n), jnp.full((n,), 1.0 / n), num_samples)


def binary_mmse(sigma: Array, scale: float, num_nodes: int = 200) -> Array:
  """Per-dim mmse of independent fair bits {-a, a}: a^2 E_z[1 - tanh(a^2/sigma^2 + a z/sigma)].

  Gauss-Hermite quadrature in z ~ N(0, 1); 1 - tanh(u) = 2 sigmoid(-2u) avoids cancellation.
  """
  t_Q, w_Q = np.polynomial.hermite.hermgauss(num_nodes)
  z_Q = jnp.asarray(math.sqrt(2.0) * t_Q, jnp.float32)
  s = jnp.asarray(sigma)[..., None]
  u = scale**2 / s**2 + scale * z_Q / s
  w_Q = jnp.asarray(w_Q / math.sqrt(math.pi), jnp.float32)
  return scale**2 * jnp.sum(w_Q * 2.0 * jax.nn.sigmoid(-2.0 * u), axis=-1)


def binary_denoiser(x_BD: Array, sigma_B: Array, scale: float) -> Array:
  """E[x_0|x_sigma] for fair bits {-a, a}: a tanh(a x / sigma^2) per dim."""
  return scale * jnp.tanh(scale * x_BD / sigma_B[:, None] ** 2)


def onehot_posterior(y_XV: Array, sigma_X: Array, codewords_VV: Array, log_probs_V: Array) -> Array:
  """p(k|y) of one position y = c_k + sigma n, k ~ exp(log_probs_V), over the codewords c_k
  (rows of codewords_VV): softmax_k(log pi_k - ||y - c_k||^2 / (2 sigma^2)). y_XV has any
  leading axes X; sigma_X broadcasts against them. The posterior mean is its @ codewords_VV.
  """
  dist_XV = jnp.sum(jnp.square(y_XV[..., None, :] - codewords_VV), axis=-1)
  return jax.nn.softmax(log_probs_V - dist_XV / (2.0 * jnp.square(sigma_X)[..., None]), axis=-1)


def _onehot_mmse_one(key, sigma, codewords_VV, log_probs_V, num_samples):
  k_S = jax.random.categorical(key, log_probs_V, shape=(num_samples,))
  y_SV = codewords_VV[k_S] + sigma * jax.random.normal(
    jax.random.fold_in(key, 1), k_S.shape + (codewords_VV.shape[1],)
  )
  r_SV = onehot_posterior(y_SV, sigma, codewords_VV, log_probs_V)
  m_SD = r_SV @ codewords_VV
  # tr Cov(x0|y) = sum_j r_j ||x_j - m||^2 (exact given y)
  spread_SV = jnp.sum(jnp.square(codewords_VV[None] - m_SD[:, None, :]), axis=-1)
  return jnp.mean(jnp.sum(r_SV * spread_SV, axis=-1)) / codewords_VV.shape[1]


def onehot_mmse(
  key: Array, sigma_G: Array, probs_V: Array, scale: float, num_samples: int = 4096
) -> Array:
  """Per-dim mmse of one-hot tokens a (e_k - 1/V) (data/tokens.py), k ~ probs_V, independent
  positions: the per-position categorical posterior p(k|y) = softmax(log pi_k - ||y - x_k||^2 /
  (2 sigma^2)), its covariance trace exact given y, Monte Carlo over y. For sequences whose
  positions are dependent this is an upper bound on the true mmse (context only helps).
  """
  probs_V = jnp.asarray(probs_V, jnp.float32)
  v = probs_V.shape[0]
  codewords_VV = scale * (jnp.eye(v) - 1.0 / v)
  log_p = jnp.log(jnp.maximum(probs_V, 1e-30))
  keys = jax.random.split(key, sigma_G.shape[0])
  fn = lambda ks: _onehot_mmse_one(ks[0], ks[1], codewords_VV, log_p, num_samples)
  return jax.lax.map(fn, (keys, jnp.asarray(sigma_G, jnp.float32)))


# ----------------------------------------------------------------------------- profiles
def entropy_rate(mmse: Array, sigma: Array) -> Array:
  """q = dH(X_0|X_sigma)/d ln sigma = mmse / sigma^2 (docs/method.md 3, I-MMSE)."""
  return mmse / sigma**2


def low_noise_gate(sigma: Array, pivot: Array | float, power: float = 3.0) -> Array:
  """g(sigma) = sigma^n / (sigma^n + c^n) (docs/method.md 4.5), computed stably in log space."""
  return jax.nn.sigmoid(power * (jnp.log(sigma) - jnp.log(pivot)))


def normalize(f_G: Array) -> Array:
  """Grid values -> masses summing to one."""
  return f_G / jnp.sum(f_G)


def _first_crossing(log_sigma_G: Array, d_G: Array, threshold: float) -> Array:
  """exp of the ln sigma where d_G first reaches `threshold`, linear between grid points."""
  hit_G = d_G >= threshold
  i = jnp.maximum(jnp.argmax(hit_G), 1)
  d0, d1 = d_G[i - 1], d_G[i]
  t = jnp.clip((threshold - d0) / jnp.maximum(d1 - d0, 1e-30), 0.0, 1.0)
  log_c = log_sigma_G[i - 1] + t * (log_sigma_G[i] - log_sigma_G[i - 1])
  return jnp.where(jnp.any(hit_G), jnp.exp(log_c), jnp.exp(log_sigma_G[0]))


def onset_pivot(log_sigma_G: Array, q_G: Array, threshold: float = 0.2) -> Array:
  """Gate pivot c: upper edge of the low-noise region, D(sigma) >= p (module docstring)."""
  dev_G = jnp.abs(q_G - q_G[0])
  d_G = dev_G / jnp.maximum(jnp.max(dev_G), 1e-30)
  return _first_crossing(log_sigma_G, d_G, threshold)


def onset_pivot_literal(log_sigma_G: Array, q_G: Array, threshold: float = 0.002) -> Array:
  """Second-hand reading of the paper's rule: largest sigma with (m/sigma^3)/max >= p.

  Kept for comparison only; it lands above the decision window of discrete data.
  """
  log_r_G = jnp.log(jnp.maximum(q_G, 1e-30)) - log_sigma_G  # m/sigma^3 = q/sigma
  r_G = jnp.exp(log_r_G - jnp.max(log_r_G))
  # scanning from high noise down = first crossing on the reversed grid
  return _first_crossing(-log_sigma_G[::-1], r_G[::-1], threshold) ** -1


def gated_profile(
  log_sigma_G: Array, q_G: Array, pivot: Array | float, power: float = 3.0
) -> Array:
  """rho = q g, normalized to grid masses (docs/method.md 4.5)."""
  return normalize(q_G * low_noise_gate(jnp.exp(log_sigma_G), pivot, power))


def effective_allocation(log_sigma_G: Array, density_G: Array, sigma_data: float) -> Array:
  """phi = pi w: the training effort per level of a ln-sigma density, as grid masses (sec. 2)."""
  return normalize(density_G * edm.loss_weight(jnp.exp(log_sigma_G), sigma_data))


def allocation_mismatch(allocation_G: Array, profile_G: Array) -> Array:
  """Total variation between two grid profiles after normalizing both: 0 = same, 1 = disjoint."""
  return 0.5 * jnp.sum(jnp.abs(normalize(allocation_G) - normalize(profile_G)))
