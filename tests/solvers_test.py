"""Tests of infonoise_jax.solvers and sigma_grids: grids against closed forms and independent
integration, samplers against exact denoisers of Gaussian / Gaussian-mixture data and a NumPy
reference of EDM Algorithm 1, network-evaluation counts, sharded == unsharded, config checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import default
from infonoise_jax import profiles, solvers

SMIN, SMAX = 0.002, 80.0
CHURN = dict(s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.0)  # EDM ImageNet-like churn

# Gaussian data N(mu, C) in 3-D with correlations; D(x; s) = mu + C (C + s^2 I)^{-1} (x - mu).
MU = np.array([0.3, -0.5, 1.0])
_A = np.array([[0.6, 0.0, 0.0], [0.3, 0.4, 0.0], [-0.2, 0.1, 0.5]])
COV = _A @ _A.T
_LAM, _U = np.linalg.eigh(COV)


def gaussian_denoiser(x_BD, sigma_B):
  shrink_BD = _LAM / (_LAM + sigma_B[:, None] ** 2)
  return MU + ((x_BD - MU) @ _U * shrink_BD) @ _U.T


# Two-component isotropic mixture in 2-D; D is the responsibility-weighted posterior mean.
MIX_MU = np.array([[-1.0, 0.5], [1.0, -0.5]])
MIX_W = np.array([0.3, 0.7])
MIX_S = 0.2


def mixture_denoiser(x_BD, sigma_B):
  s2, v_B = MIX_S**2, MIX_S**2 + sigma_B**2
  logp_BK = jnp.log(MIX_W) - 0.5 * jnp.sum((x_BD[:, None] - MIX_MU) ** 2, -1) / v_B[:, None]
  r_BK = jax.nn.softmax(logp_BK, -1)
  sig2_B11 = sigma_B[:, None, None] ** 2
  post_BKD = (s2 * x_BD[:, None] + sig2_B11 * MIX_MU) / (s2 + sig2_B11)
  return jnp.sum(r_BK[..., None] * post_BKD, 1)


def run(denoise_fn, method, num_steps, n, dim, seed=0, **kw):
  sigmas = solvers.karras_sigmas(num_steps, SMIN, SMAX, 7.0)
  fn = jax.jit(lambda key: solvers.sample(denoise_fn, key, (n, dim), sigmas, method, **kw))
  return np.asarray(fn(jax.random.key(seed)), np.float64)


# ------------------------------------------------------------------ Karras grid


@pytest.mark.parametrize("num_steps", [1, 2, 18])
def test_karras_grid_matches_eq5_endpoints_and_descends(num_steps):
  sig = np.asarray(solvers.karras_sigmas(num_steps, SMIN, SMAX, 7.0), np.float64)
  assert sig.shape == (num_steps + 1,) and sig[-1] == 0.0
  assert sig[0] == np.float32(SMAX)
  if num_steps > 1:
    assert sig[-2] == np.float32(SMIN)
    i = np.arange(num_steps)
    ref = (SMAX ** (1 / 7) + i / (num_steps - 1) * (SMIN ** (1 / 7) - SMAX ** (1 / 7))) ** 7
    np.testing.assert_allclose(sig[:-1], ref, rtol=2e-5)
  assert np.all(np.diff(sig) < 0)


@pytest.mark.parametrize(
  "args", [(0, SMIN, SMAX, 7.0), (18, 0.0, SMAX, 7.0), (18, 1.0, 0.5, 7.0), (2.5, SMIN, SMAX, 7.0)]
)
def test_karras_grid_rejects_invalid(args):
  with pytest.raises(ValueError):
    solvers.karras_sigmas(*args)


# ------------------------------------------------------------------ InfoGrid


def _mass_between(edges_E, rate_K, a, b, coord):
  """Exact integral of the piecewise-constant profile over [a, b] in `coord`, bin by bin."""
  e = coord(edges_E)
  lo, hi = coord(np.minimum(a, b)), coord(np.maximum(a, b))
  overlap_K = np.clip(np.minimum(hi, e[1:]) - np.maximum(lo, e[:-1]), 0.0, None)
  return float(np.sum(rate_K * overlap_K))


def _profile(num_bins=96, seed=0):
  """A gated, bumpy profile on uniform ln-sigma bins over [SMIN, SMAX], with a zero stretch."""
  edges_E = np.linspace(np.log(SMIN), np.log(SMAX), num_bins + 1)
  c_K = 0.5 * (edges_E[1:] + edges_E[:-1])
  sigma_K = np.exp(c_K)
  rate_K = np.exp(-0.5 * ((c_K + 0.5) / 1.2) ** 2) * sigma_K**3 / (sigma_K**3 + 0.2**3)
  rate_K *= 1.0 + 0.5 * np.random.default_rng(seed).random(num_bins)
  rate_K[-10:] = 0.0  # no mass at the highest noise levels
  return edges_E, c_K, rate_K


@pytest.mark.parametrize("rescaled", [False, True])
@pytest.mark.parametrize("limits", [(None, None), (0.01, 20.0)])
def test_infogrid_puts_equal_profile_mass_between_steps(rescaled, limits):
  edges_E, c_K, rate_K = _profile()
  n = 12
  sig = np.asarray(
    solvers.infogrid_sigmas(c_K, rate_K, n, rescaled, sigma_min=limits[0], sigma_max=limits[1]),
    np.float64,
  )
  lo = limits[0] or np.exp(edges_E[0])
  hi = limits[1] or np.exp(edges_E[-1])
  assert sig.shape == (n + 1,) and sig[-1] == 0.0
  np.testing.assert_allclose([sig[0], sig[-2]], [hi, lo], rtol=1e-5)
  if limits[0] is not None:
    assert sig[0] == np.float32(hi) and sig[-2] == np.float32(lo)
  assert np.all(np.diff(sig) < 0)
  # Rescaled: density sigma dH/dsigma per sigma = rate per unit sigma (module docstring).
  coord = np.exp if rescaled else (lambda l: l)
  log_sig = np.log(sig[:-1])
  total = _mass_between(edges_E, rate_K, np.log(lo), np.log(hi), coord)
  shares = [
    _mass_between(edges_E, rate_K, log_sig[i + 1], log_sig[i], coord) / total for i in range(n - 1)
  ]
  np.testing.assert_allclose(shares, 1.0 / (n - 1), atol=2e-5)


def _truncated_normal_cdf(x, m, s, lo, hi):
  phi = lambda v: 0.5 * (1.0 + math.erf((v - m) / (s * math.sqrt(2.0))))
  return (phi(x) - phi(lo)) / (phi(hi) - phi(lo))


@pytest.mark.parametrize("rescaled", [False, True])
def test_infogrid_matches_closed_form_quantiles(rescaled):
  # rate per ln sigma = N(l; m, s). Plain: F = truncated normal CDF in l. Rescaled: density per
  # ln sigma is sigma * rate = e^l N(l; m, s), proportional to N(l; m + s^2, s).
  m, s, num_bins, n = -0.5, 1.0, 512, 10
  edges_E = np.linspace(np.log(SMIN), np.log(SMAX), num_bins + 1)
  c_K = 0.5 * (edges_E[1:] + edges_E[:-1])
  rate_K = np.exp(-0.5 * ((c_K - m) / s) ** 2)
  sig = np.asarray(solvers.infogrid_sigmas(c_K, rate_K, n, rescaled), np.float64)
  mean = m + s**2 if rescaled else m
  f = [_truncated_normal_cdf(math.log(v), mean, s, edges_E[0], edges_E[-1]) for v in sig[:-1]]
  # Binning error of a piecewise-constant profile with bin width 0.02 in ln sigma.
  np.testing.assert_allclose(f, 1.0 - np.arange(n) / (n - 1), atol=2e-3)
  if rescaled:  # the rescaled grid sits higher by ~s^2 in ln sigma at the median
    plain = np.asarray(solvers.infogrid_sigmas(c_K, rate_K, n, False), np.float64)
    assert np.all(sig[1:-2] > plain[1:-2])


def test_infogrid_zero_profile_falls_back_to_log_uniform_and_jits():
  c_K = np.linspace(np.log(SMIN), np.log(SMAX), 33)[:-1] + 0.5 * np.log(SMAX / SMIN) / 32
  grid = jax.jit(solvers.infogrid_sigmas, static_argnums=(2, 3))(c_K, np.zeros(32), 5, False)
  np.testing.assert_allclose(grid[:-1], np.geomspace(SMAX, SMIN, 5), rtol=1e-4)


@pytest.mark.parametrize(
  "args", [(np.zeros(4), np.ones(4), 0), (np.zeros(1), np.ones(1), 4), (np.zeros(4), np.ones(3), 4)]
)
def test_infogrid_rejects_invalid(args):
  with pytest.raises(ValueError):
    solvers.infogrid_sigmas(*args)


# ------------------------------------------------------------------ samplers on exact denoisers


def _reference_heun(x0_BD, sigmas):
  """EDM Algorithm 1 in NumPy float64 on the Gaussian denoiser (independent re-statement)."""

  def denoise(x, s):
    return MU + (x - MU) @ _U @ np.diag(_LAM / (_LAM + s**2)) @ _U.T

  x = x0_BD
  for t_cur, t_next in zip(sigmas[:-1], sigmas[1:], strict=True):
    d = (x - denoise(x, t_cur)) / t_cur
    x_next = x + (t_next - t_cur) * d
    if t_next > 0:
      x_next = x + (t_next - t_cur) * 0.5 * (d + (x_next - denoise(x_next, t_next)) / t_next)
    x = x_next
  return x


def test_heun_matches_numpy_reference_of_algorithm1():
  sigmas = solvers.karras_sigmas(18, SMIN, SMAX, 7.0)
  key = jax.random.key(3)
  got = np.asarray(solvers.sample(gaussian_denoiser, key, (64, 3), sigmas, "heun"), np.float64)
  init_key, _ = jax.random.split(key)  # documented: the first half of the key seeds x_0
  x0 = float(sigmas[0]) * np.asarray(jax.random.normal(init_key, (64, 3)), np.float64)
  ref = _reference_heun(x0, np.asarray(sigmas, np.float64))
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


# (method, num_steps, relative allowance on the covariance for discretization bias).
# Heun at 18 steps is biased on this data: the exact 1-D recurrence of Algorithm 1 for scale 0.5
# ends at std 0.528 (+5.5%, +11% in variance); at 64 steps +0.4% (+0.8%). Euler at 256 steps
# and Algorithm 2 at 128 steps were within Monte-Carlo error here. (Euler or Algorithm 2 at 18
# steps are off by 25 standard errors and fail the 18-step Heun tolerance.)
MOMENT_CASES = [
  ("heun", 18, 0.13, {}),
  ("exp_heun", 18, 0.13, {}),
  ("heun", 64, 0.01, {}),
  ("euler", 256, 0.01, {}),
  ("stochastic", 128, 0.015, CHURN),
]


@pytest.mark.parametrize("method,num_steps,allow,kw", MOMENT_CASES)
def test_samplers_reproduce_gaussian_mean_and_covariance(method, num_steps, allow, kw):
  n = 16384
  x = run(gaussian_denoiser, method, num_steps, n, 3, **kw)
  # Monte-Carlo standard errors: mean_i: sqrt(C_ii/n); C_ij: sqrt((C_ii C_jj + C_ij^2)/n).
  d = np.diag(COV)
  se_mean = np.sqrt(d / n)
  se_cov = np.sqrt((np.outer(d, d) + COV**2) / n)
  # The start x_0 = sigma_max eps instead of mu + ... biases the mean by <= |mu| sqrt(C)/sigma_max.
  start_bias = np.abs(MU) * np.sqrt(d.max()) / SMAX
  assert np.all(np.abs(x.mean(0) - MU) <= 5 * se_mean + start_bias)
  assert np.all(np.abs(np.cov(x.T) - COV) <= 5 * se_cov + allow * np.sqrt(np.outer(d, d)))


def test_heun_18_reproduces_gaussian_mixture():
  n = 16384
  x = run(mixture_denoiser, "heun", 18, n, 2, seed=1)
  # Component weights: nearest-mean assignment (components are 5.6 stds apart, so the
  # misassignment rate is ~1e-8); binomial standard error sqrt(w(1-w)/n).
  near_1 = np.sum((x - MIX_MU[1]) ** 2, 1) < np.sum((x - MIX_MU[0]) ** 2, 1)
  assert abs(near_1.mean() - MIX_W[1]) <= 5 * math.sqrt(MIX_W[0] * MIX_W[1] / n)
  mean = MIX_W @ MIX_MU
  dev = MIX_MU - mean
  cov = MIX_S**2 * np.eye(2) + (MIX_W[:, None] * dev).T @ dev
  se_mean = np.sqrt(np.diag(cov) / n)
  assert np.all(np.abs(x.mean(0) - mean) <= 5 * se_mean)
  # Within-component spread: std MIX_S per dim; 5 standard errors + 6% Heun-18 bias (see above).
  for k, sel in enumerate([~near_1, near_1]):
    std = (x[sel] - MIX_MU[k]).std(0)
    assert np.all(np.abs(std - MIX_S) <= 5 * MIX_S / math.sqrt(2 * sel.sum()) + 0.06 * MIX_S)


@pytest.mark.parametrize("method", solvers.METHODS)
def test_network_evaluations_counted_at_run_time(method):
  calls = []

  def counting_denoiser(x_BD, sigma_B):
    jax.debug.callback(lambda: calls.append(1))
    return gaussian_denoiser(x_BD, sigma_B)

  sigmas = solvers.karras_sigmas(18, SMIN, SMAX, 7.0)
  x = solvers.sample(counting_denoiser, jax.random.key(0), (4, 3), sigmas, method, **CHURN)
  jax.block_until_ready(x)
  jax.effects_barrier()
  expected = {"heun": 35, "exp_heun": 35, "euler": 18, "stochastic": 35}[method]
  assert len(calls) == expected == solvers.num_evaluations(18, method)


@pytest.mark.parametrize("method", ["heun", "stochastic"])
def test_sharded_batch_gives_same_samples_as_unsharded(method):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  batch = NamedSharding(mesh, P("data"))
  sigmas = solvers.karras_sigmas(8, SMIN, SMAX, 7.0)

  def draw(key, sharding):
    return solvers.sample(
      gaussian_denoiser, key, (64, 3), sigmas, method, sharding=sharding, **CHURN
    )

  key = jax.random.key(7)
  plain = jax.jit(lambda k: draw(k, None))(key)
  sharded = jax.jit(lambda k: draw(k, batch), out_shardings=batch)(key)
  assert sharded.sharding.is_equivalent_to(batch, 2)
  assert len(sharded.addressable_shards) == 8
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(plain), rtol=1e-5, atol=1e-5)


def test_sample_rejects_unknown_method_and_short_grid():
  with pytest.raises(ValueError, match="sampler.name"):
    solvers.sample(gaussian_denoiser, jax.random.key(0), (2, 3), jnp.array([1.0, 0.0]), "rk4")
  with pytest.raises(ValueError):
    solvers.sample(gaussian_denoiser, jax.random.key(0), (2, 3), jnp.array([1.0]), "heun")


# ------------------------------------------------------------------ config


def _config(**sampler):
  c = default.get_config()
  c.sampler.update(sampler)
  return c


def test_make_sigmas_follows_config():
  c = _config(num_steps=7, rho=5.0)
  np.testing.assert_array_equal(
    solvers.make_sigmas(c), solvers.karras_sigmas(7, c.edm.sigma_min, c.edm.sigma_max, 5.0)
  )
  _, c_K, rate_K = _profile()
  for grid, rescaled in [("infogrid", False), ("infogrid_rescaled", True)]:
    want = solvers.infogrid_sigmas(c_K, rate_K, 7, rescaled, c.edm.sigma_min, c.edm.sigma_max)
    got = solvers.make_sigmas(_config(num_steps=7, grid=grid), (c_K, rate_K))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
  "override,key",
  [
    (dict(grid="infogrid"), "sampler.grid"),
    (dict(grid="infogrid_rescaled"), "sampler.grid"),
    (dict(grid="linear"), "sampler.grid"),
    (dict(name="ddim"), "sampler.name"),
    (dict(num_steps=0), "sampler.num_steps"),
    (dict(rho=0.0), "sampler.rho"),
    (dict(s_churn=-1.0), "sampler.s_churn"),
    (dict(s_noise=-1.0), "sampler.s_noise"),
    (dict(s_tmin=2.0, s_tmax=1.0), "sampler.s_tmin"),
  ],
)
def test_make_sigmas_rejects_invalid_settings_naming_the_key(override, key):
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    solvers.make_sigmas(_config(**override))


def test_one_step_and_churn_without_its_method_are_said(caplog):
  """Settings that run but do not do what they seem: one step from sigma_max to 0 gives the
  denoiser's output there (about the data mean), a churn without the stochastic method has no
  effect. Each is warned once; the defaults warn of neither."""
  for key in [("one step", "heun", 1), ("churn", "heun", 1)]:
    solvers._warned.discard(key)
  with caplog.at_level("WARNING", logger=solvers.__name__):
    solvers.validate_sampler_config(_config())
    assert caplog.text == ""
    solvers.validate_sampler_config(_config(num_steps=1))
    assert "sampler.num_steps=1: one step from sigma_max=80" in caplog.text
    solvers.validate_sampler_config(_config(s_churn=40.0))
    assert "sampler.s_churn=40 has no effect with sampler.name='heun'" in caplog.text
    caplog.clear()
    solvers.validate_sampler_config(_config(s_churn=40.0, name="stochastic"))
    assert caplog.text == ""


def test_make_sigmas_rejects_bad_edm_range():
  c = _config()
  c.edm.sigma_max = c.edm.sigma_min / 2
  with pytest.raises(ValueError, match=r"edm\.sigma_max"):
    solvers.make_sigmas(c)


# ------------------------------------------------------------------ large step ratios (InfoGrid)


def _gaussian_infogrid(num_steps: int, rescaled: bool) -> np.ndarray:
  """InfoGrid from the exact entropy-rate profile of the Gaussian data above."""
  log_sigma_K = np.linspace(np.log(SMIN), np.log(SMAX), 128)
  mmse_K = profiles.spectral_gaussian_mmse(jnp.exp(log_sigma_K), jnp.asarray(_LAM))
  rate_K = profiles.entropy_rate(mmse_K, jnp.exp(log_sigma_K))
  return np.asarray(
    solvers.infogrid_sigmas(log_sigma_K, rate_K, num_steps, rescaled, SMIN, SMAX), np.float64
  )


def _ode_error(method: str, sigmas: np.ndarray, n: int = 4096) -> tuple[float, np.ndarray]:
  """RMS distance of the samples from the exact probability-flow ODE solution started from
  the same x_T: x(0) = mu + C^{1/2} (C + sigma_max^2 I)^{-1/2} (x_T - mu); and the samples."""
  key = jax.random.key(0)
  x = np.asarray(
    jax.jit(lambda k: solvers.sample(gaussian_denoiser, k, (n, 3), sigmas, method))(key)
  )
  init_key, _ = jax.random.split(key)  # as solvers.sample draws x_T
  x_T = SMAX * np.asarray(jax.random.normal(init_key, (n, 3), jnp.float32), np.float64)
  scale_D = np.sqrt(_LAM / (_LAM + SMAX**2))
  exact = MU + ((x_T - MU) @ _U * scale_D) @ _U.T
  return float(np.sqrt(np.mean((x - exact) ** 2))), x


def test_exp_heun_is_stable_where_edm_heun_blows_up_on_infogrid(caplog):
  """Regression: 18-step InfoGrid's first step goes from 80 to ~1; EDM's Heun amplified the
  denoiser change there ~40x and drew samples far outside the data (exact denoiser)."""
  sigmas = _gaussian_infogrid(18, rescaled=False)
  assert solvers.max_step_ratio(sigmas) > 50
  data_std = np.sqrt(_LAM.max())
  err_exp, x_exp = _ode_error("exp_heun", sigmas)
  err_heun, _ = _ode_error("heun", sigmas)
  assert err_exp < 0.2 * data_std  # 18 steps: discretization error, not instability
  assert np.abs(x_exp - MU).max() < 6 * data_std
  assert err_heun > 10 * data_std  # the defect exp_heun fixes; heun warns about it:
  with caplog.at_level("WARNING"):
    assert solvers.check_step_ratios(sigmas, "heun", "infogrid")
    assert not solvers.check_step_ratios(sigmas, "exp_heun", "infogrid")
  assert "exp_heun" in caplog.text


@pytest.mark.parametrize("grid", ["karras", "infogrid_rescaled"])
def test_heun_within_tested_ratios_matches_the_ode(grid):
  """The grids with step ratios up to HEUN_TESTED_RATIO: EDM's Heun and exp_heun both track
  the exact solution, and no warning is given."""
  sigmas = (
    np.asarray(solvers.karras_sigmas(18, SMIN, SMAX, 7.0))
    if grid == "karras"
    else _gaussian_infogrid(18, rescaled=True)
  )
  assert solvers.max_step_ratio(sigmas) <= solvers.HEUN_TESTED_RATIO
  assert not solvers.check_step_ratios(sigmas, "heun", grid)
  for method in ("heun", "exp_heun"):
    assert _ode_error(method, sigmas)[0] < 0.1 * np.sqrt(_LAM.max())


def _low_noise_profile():
  """A learned-like profile: most of the rate in a bump at sigma ~ 0.005, a little everywhere
  (RESULTS.md section 17)."""
  c_K = np.linspace(np.log(SMIN), np.log(SMAX), 128)
  return c_K, np.exp(-0.5 * ((c_K - np.log(0.005)) / 0.6) ** 2) + 0.01


@pytest.mark.parametrize(
  "grid, method, first",
  [
    ("infogrid", "heun", True),
    ("infogrid", "exp_heun", True),
    ("infogrid_rescaled", "heun", False),
  ],
)
def test_infogrid_warns_once_where_it_leaves_a_gap_naming_the_step(
  grid, method, first, caplog, monkeypatch
):
  """A learned-like profile: the plain grid's widest step is its first (80 -> below 1), the
  rescaled grid's its last second-order one (down to sigma_min). One warning for any solver,
  naming that step; Heun's amplification only for Heun; not repeated on the next call."""
  monkeypatch.setattr(solvers, "_warned", set())
  config = _config(num_steps=18, grid=grid, name=method)
  with caplog.at_level("WARNING"):
    sigmas = np.asarray(solvers.make_sigmas(config, _low_noise_profile()))
    solvers.make_sigmas(config, _low_noise_profile())
  ratios = sigmas[:-2] / sigmas[1:-1]  # the steps with a second evaluation (not the one to 0)
  i = int(np.argmax(ratios))
  assert ratios[i] > solvers.HEUN_TESTED_RATIO
  assert i == (0 if first else len(ratios) - 1)
  text = caplog.text
  assert f"crosses sigma {sigmas[i]:.3g} -> {sigmas[i + 1]:.3g} in one step" in text
  assert "sampler.grid='karras'" in text
  assert "--grid=karras" in text  # the sample / evaluate flag: they take no --config.sampler.*
  assert ("EDM's Heun" in text) == (method == "heun")
  assert ("--method=exp_heun" in text) == (method == "heun")
  assert text.count("WARNING") == 1


def test_no_gap_warning_for_a_broad_profile_or_the_karras_grid(caplog, monkeypatch):
  monkeypatch.setattr(solvers, "_warned", set())
  c_K = np.linspace(np.log(SMIN), np.log(SMAX), 128)
  with caplog.at_level("WARNING"):
    flat = solvers.make_sigmas(_config(num_steps=18, grid="infogrid"), (c_K, np.ones_like(c_K)))
    # uniform rate per ln sigma: a geometric grid, ratio (SMAX / SMIN)^(1/17) per step
    np.testing.assert_allclose(solvers.max_step_ratio(flat), (SMAX / SMIN) ** (1 / 17), rtol=1e-4)
    karras6 = solvers.karras_sigmas(6, SMIN, SMAX, 7.0)
    assert solvers.max_step_ratio(karras6) > solvers.HEUN_TESTED_RATIO
    assert not solvers.check_profile_gaps(karras6, "karras")
  assert "crosses sigma" not in caplog.text
