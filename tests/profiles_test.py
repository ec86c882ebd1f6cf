"""Tests for the information-profile tools: closed forms against independent Monte Carlo, the
I-MMSE relation, the gate-pivot rules on closed forms, and the allocation mismatch metric."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infonoise_jax import edm, profiles

LOG_SIGMA_G = np.linspace(math.log(0.002), math.log(80.0), 512)
SIGMA_G = np.exp(LOG_SIGMA_G)


def _onset(mmse_G, p=0.2):
  return float(profiles.onset_pivot(LOG_SIGMA_G, profiles.entropy_rate(mmse_G, SIGMA_G), p))


def _peak(mmse_G):
  return float(SIGMA_G[np.argmax(np.asarray(profiles.entropy_rate(mmse_G, SIGMA_G)))])


# ------------------------------------------------------------------- closed forms vs Monte Carlo
def test_gaussian_closed_form_matches_empirical_prior_of_many_points():
  s = 0.5
  points_ND = s * jax.random.normal(jax.random.key(0), (2048, 2))
  sigma_G = jnp.array([0.1, 0.2, 0.5, 1.0, 3.0])
  mc_G = profiles.point_set_mmse(jax.random.key(1), sigma_G, points_ND, num_samples=2048)
  emp_var = float(jnp.mean(jnp.var(points_ND, axis=0)))  # the point cloud's own variance
  np.testing.assert_allclose(mc_G, profiles.gaussian_mmse(sigma_G, math.sqrt(emp_var)), rtol=0.06)


def test_single_component_mixture_is_exact_gaussian():
  mean_1D, std_1 = jnp.full((1, 5), 0.3), jnp.array([0.7])
  sigma_G = jnp.array([0.01, 0.3, 2.0])
  mmse_G = profiles.mixture_mmse(jax.random.key(0), sigma_G, mean_1D, std_1, jnp.ones(1), 16)
  np.testing.assert_allclose(mmse_G, profiles.gaussian_mmse(sigma_G, 0.7), rtol=1e-5)
  x_BD = jax.random.normal(jax.random.key(1), (3, 5))
  np.testing.assert_allclose(
    profiles.mixture_denoiser(x_BD, sigma_G, mean_1D, std_1, jnp.ones(1)),
    profiles.gaussian_denoiser(x_BD, sigma_G, 0.3, 0.7),
    rtol=1e-5,
  )


@jax.jit
def _mixture_mc_vs_exact(key, sigma_G, means_ND, stds_N, w_N):
  """Plain MC of ||E[x0|x] - x0||^2 (softmax denoiser) and the Rao-Blackwellised mmse."""
  g, n, d = sigma_G.shape[0], 8192, means_ND.shape[1]
  kn, kz, ke = jax.random.split(key, 3)
  c_B = jax.random.choice(kn, means_ND.shape[0], (g * n,), p=w_N)
  x0_BD = means_ND[c_B] + stds_N[c_B, None] * jax.random.normal(kz, (g * n, d))
  sigma_B = jnp.repeat(sigma_G, n)
  x_BD = x0_BD + sigma_B[:, None] * jax.random.normal(ke, (g * n, d))
  den_BD = profiles.mixture_denoiser(x_BD, sigma_B, means_ND, stds_N, w_N)
  e_GN = jnp.mean(jnp.square(den_BD - x0_BD), -1).reshape(g, n)
  exact_G = profiles.mixture_mmse(key, sigma_G, means_ND, stds_N, w_N, 8192)
  return jnp.mean(e_GN, 1), jnp.std(e_GN, 1) / math.sqrt(n), exact_G


def test_mixture_mmse_equals_error_of_its_bayes_denoiser():
  k = jax.random.key(4)
  means_ND = jax.random.normal(k, (4, 8))
  stds_N, w_N = jnp.array([0.1, 0.2, 0.3, 0.05]), jnp.array([0.4, 0.3, 0.2, 0.1])
  mc_G, se_G, exact_G = _mixture_mc_vs_exact(k, jnp.array([0.1, 0.5, 2.0]), means_ND, stds_N, w_N)
  assert np.all(np.abs(mc_G - exact_G) < 4 * se_G + 1e-3 * exact_G)


def test_binary_quadrature_matches_monte_carlo_and_point_set():
  a, n = 0.5, 200000
  sigma_G = jnp.array([0.2, 0.3, 0.4, 1.0, 3.0])
  quad_G = profiles.binary_mmse(sigma_G, a)
  k1, k2 = jax.random.split(jax.random.key(0))
  x0_B1 = a * jnp.sign(jax.random.normal(k1, (n, 1)))
  eps_B1 = jax.random.normal(k2, (n, 1))
  for i, sigma in enumerate(np.asarray(sigma_G)):
    sigma_B = jnp.full((n,), sigma)
    den = profiles.binary_denoiser(x0_B1 + sigma * eps_B1, sigma_B, a)
    e_B = jnp.square(den - x0_B1)[:, 0]
    se = float(jnp.std(e_B)) / math.sqrt(n)
    assert abs(float(jnp.mean(e_B)) - float(quad_G[i])) < 4 * se + 1e-7
  points = jnp.array([[-a], [a]])  # empirical prior of the two symbols: softmax posterior
  pts_G = profiles.point_set_mmse(jax.random.key(3), sigma_G, points, num_samples=50000)
  np.testing.assert_allclose(pts_G, quad_G, rtol=0.03, atol=1e-6)
  assert float(profiles.binary_mmse(jnp.array(80.0), a)) == pytest.approx(a**2, rel=1e-3)


def test_binary_quadrature_in_the_low_noise_tail():
  """Rare-error regime (MC cannot resolve it): float64 trapezoid over z in [-40, 40]."""
  a = 0.5
  z = np.linspace(-40.0, 40.0, 400001)
  for sigma in (0.05, 0.1, 0.15):
    u = a * a / sigma**2 + a * z / sigma
    f = a * a * 2.0 / (1.0 + np.exp(np.minimum(2.0 * u, 700.0))) * np.exp(-0.5 * z * z)
    ref = np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(z)) / math.sqrt(2 * math.pi)
    assert float(profiles.binary_mmse(jnp.array(sigma), a)) == pytest.approx(ref, rel=2e-3)


def test_entropy_rate_integrates_to_gaussian_conditional_entropy():
  """I-MMSE: int q d ln sigma = H(X0|X_hi) - H(X0|X_lo), H = 0.5 ln(2 pi e s^2 sg^2/(s^2+sg^2))."""
  s = 0.5
  q_G = np.asarray(profiles.entropy_rate(profiles.gaussian_mmse(SIGMA_G, s), SIGMA_G))
  integral = np.sum(0.5 * (q_G[1:] + q_G[:-1]) * np.diff(LOG_SIGMA_G))
  h = lambda sg: 0.5 * math.log(2 * math.pi * math.e * s**2 * sg**2 / (s**2 + sg**2))
  assert integral == pytest.approx(h(80.0) - h(0.002), rel=1e-4)


# ------------------------------------------------------------------- gate and pivot rules
def test_low_noise_gate_matches_formula():
  sg = np.array([0.01, 0.1, 0.2, 0.5, 3.0])
  np.testing.assert_allclose(profiles.low_noise_gate(sg, 0.2, 3.0), sg**3 / (sg**3 + 0.008), 1e-5)
  assert float(profiles.low_noise_gate(jnp.array(0.2), 0.2)) == pytest.approx(0.5)
  assert float(profiles.low_noise_gate(jnp.array(1e-30), 0.2)) == 0.0


def test_onset_gaussian_closed_form():
  s, p = 0.5, 0.2
  c = _onset(profiles.gaussian_mmse(SIGMA_G, s), p)
  assert c == pytest.approx(s * math.sqrt(p / (1 - p)), rel=0.01)  # D = sigma^2/(s^2+sigma^2)


@pytest.mark.parametrize("a", [0.5, 1.0, 2.0])
def test_onset_binary_well_below_peak_and_scale_equivariant(a):
  mmse_G = profiles.binary_mmse(SIGMA_G, a)
  c, peak = _onset(mmse_G), _peak(mmse_G)
  assert peak == pytest.approx(0.82 * a, rel=0.03)  # a = 0.5: 0.41
  assert c < 0.5 * peak
  assert c == pytest.approx(0.384 * a, rel=0.03)  # scales with the data
  assert float(profiles.low_noise_gate(jnp.array(peak), c)) > 0.88  # the window survives


@pytest.mark.parametrize("side", [32, 64])
def test_onset_natural_image_like_spectrum_near_reported_value(side):
  lam_D = jnp.asarray(profiles.power_law_spectrum(side, 2.0, std=0.5))
  c = _onset(profiles.spectral_gaussian_mmse(SIGMA_G, lam_D))
  assert 0.1 < c < 0.2  # reported for CIFAR-10: about 0.15


def test_onset_mixture_marks_component_width_below_separation_bump():
  w = 0.1
  means_ND = jax.random.normal(jax.random.key(0), (8, 16))
  mmse_G = profiles.mixture_mmse(
    jax.random.key(1), jnp.asarray(SIGMA_G[::4]), means_ND, jnp.full(8, w), jnp.full(8, 1 / 8), 1024
  )
  x_G, q_G = LOG_SIGMA_G[::4], profiles.entropy_rate(mmse_G, SIGMA_G[::4])
  c = float(profiles.onset_pivot(x_G, q_G, 0.2))
  assert c == pytest.approx(w * 0.5, rel=0.1)  # the plateau ends at the component width
  bump = float(np.exp(x_G[np.argmax(np.where(x_G > math.log(0.5), q_G, 0))]))
  assert bump > 5 * c


def test_onset_literal_reproduces_second_hand_numbers():
  """docs/method.md 4.5: the literal reading gives 4.4 for bits of scale 0.5, 0.49 for N(0, .25)."""
  q_bin = profiles.entropy_rate(profiles.binary_mmse(SIGMA_G, 0.5), SIGMA_G)
  q_gau = profiles.entropy_rate(profiles.gaussian_mmse(SIGMA_G, 0.5), SIGMA_G)
  c_bin = float(profiles.onset_pivot_literal(LOG_SIGMA_G, q_bin, 0.002))
  assert 4.2 < c_bin < 4.7 and c_bin > 10 * _peak(profiles.binary_mmse(SIGMA_G, 0.5))
  assert float(profiles.onset_pivot_literal(LOG_SIGMA_G, q_gau, 0.002)) == pytest.approx(
    0.49, abs=0.02
  )


# ------------------------------------------------------------------- allocation diagnostics
def test_effective_allocation_of_inverse_weight_density_is_uniform():
  w_G = edm.loss_weight(SIGMA_G, 0.5)
  phi_G = profiles.effective_allocation(LOG_SIGMA_G, 3.0 / w_G, 0.5)
  np.testing.assert_allclose(phi_G, np.full(SIGMA_G.size, 1 / SIGMA_G.size), rtol=1e-4)
  ln_pdf = np.exp(-0.5 * ((LOG_SIGMA_G + 1.2) / 1.2) ** 2)
  phi_G = np.asarray(profiles.effective_allocation(LOG_SIGMA_G, ln_pdf, 0.5))
  want = ln_pdf * np.asarray(w_G) / np.sum(ln_pdf * np.asarray(w_G))
  np.testing.assert_allclose(phi_G, want, rtol=1e-4, atol=1e-9)


def test_mismatch_is_a_total_variation_distance():
  rng = np.random.default_rng(0)
  p, q, r = (jnp.asarray(rng.random(64)) for _ in range(3))
  tv = lambda a, b: float(profiles.allocation_mismatch(a, b))
  assert tv(p, 7.0 * p) == pytest.approx(0.0, abs=1e-6)  # scale invariant
  assert tv(p, q) == pytest.approx(tv(q, p))
  assert 0.0 < tv(p, q) < 1.0
  assert tv(p, r) <= tv(p, q) + tv(q, r) + 1e-6
  one_hot = lambda i: jnp.zeros(64).at[i].set(1.0)
  assert tv(one_hot(3), one_hot(40)) == pytest.approx(1.0)
  mixed = 0.75 * one_hot(3) + 0.25 * one_hot(40)
  assert tv(one_hot(3), mixed) == pytest.approx(0.25)
