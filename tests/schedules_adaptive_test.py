"""Adaptive peers: each moves to its stated target on a synthetic loss curve, stays unbiased,
drops non-finite entries and compiles once."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("infonoise_jax.schedules.infonoise")  # the package imports InfoNoise

from configs.default import get_config
from infonoise_jax import schedules
from infonoise_jax.schedules import adaptive

BATCH = 1024
STEPS = 400  # enough for the per-bin tables (TV error ~0.003 after 400 steps)


def _config(**adaptive_overrides):
  c = get_config()
  c.schedule.adaptive.num_bins = 32
  c.schedule.adaptive.warmup_steps = 50
  c.schedule.adaptive.ema_beta = 0.98
  c.schedule.adaptive.floor = 0.02
  for k, v in adaptive_overrides.items():
    c.schedule.adaptive[k] = v
  return c


def _run(schedule, feed, steps=STEPS, seed=0):
  """`steps` sample -> feed -> update rounds in one jitted lax.scan; returns the final state."""

  def body(state, key):
    sample_key, feed_key = jax.random.split(key)
    sigma_B, _ = schedule.sample(state, sample_key, BATCH)
    err_B, loss_B = feed(jnp.log(sigma_B), feed_key)
    state, _ = schedule.update(state, sigma_B, err_B, loss_B)
    return state, None

  keys = jax.random.split(jax.random.key(seed), steps)
  return jax.jit(lambda s: jax.lax.scan(body, s, keys)[0])(schedule.init_state())


def _tv(p, q):
  return 0.5 * float(np.sum(np.abs(np.asarray(p) - np.asarray(q))))


# Synthetic loss curve: mean f(l), and a relative spread g(l) that only the second moment sees.
def _f(l):
  return 1.0 + 0.8 * jnp.exp(-0.5 * jnp.square(l - 0.5))


def _g(l):
  return 0.95 * jax.nn.sigmoid(-2.0 * (l + 1.0))


def _loss_feed(l_B, key):
  sign_B = jax.random.rademacher(key, l_B.shape, jnp.float32)  # E[L] = f, E[L^2] = f^2 (1 + g^2)
  loss_B = _f(l_B) * (1.0 + _g(l_B) * sign_B)
  return loss_B, loss_B


def _pav(y):
  """Reference: pool-adjacent-violators for the non-decreasing least-squares fit."""
  blocks = []  # [mean, size]
  for v in y:
    blocks.append([float(v), 1])
    while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
      (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
      blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
  return np.concatenate([[m] * n for m, n in blocks])


def test_isotonic_matches_pav():
  y = np.random.default_rng(0).standard_normal(24).cumsum() * 0.3
  fit = jax.jit(adaptive.isotonic_increasing)(jnp.asarray(y))
  np.testing.assert_allclose(fit, _pav(y), atol=1e-5)


def test_cdcd_density_follows_loss_slope():
  """err = Gaussian-data mmse s^2 sigma^2 / (s^2 + sigma^2): pi ~ d err / d ln sigma."""
  s2 = 0.25
  schedule = adaptive.CDCD.from_config(_config())

  def feed(l_B, key):
    sigma2_B = jnp.exp(2.0 * l_B)
    err_B = s2 * sigma2_B / (s2 + sigma2_B) * (1.0 + 0.1 * jax.random.normal(key, l_B.shape))
    return err_B, err_B * 123.0  # CDCD(signal=err) must ignore loss

  state = _run(schedule, feed)
  sigma2_K = jnp.exp(2.0 * schedule.centers())
  slope_K = 2.0 * s2 * s2 * sigma2_K / jnp.square(s2 + sigma2_K)  # closed-form d err / d l
  target_K = adaptive.mix_floor(slope_K, schedule.floor)
  assert _tv(state["pmf_K"], target_K) < 0.05
  lognormal_K = schedule._base_pmf()
  assert _tv(state["pmf_K"], target_K) < 0.5 * _tv(lognormal_K, target_K)


@pytest.fixture(scope="module")
def importance_runs():
  """VDM++ and iDDPM after STEPS steps on the synthetic curve (one scan compile each)."""
  out = {}
  for cls in (adaptive.VDMPP, adaptive.IDDPM):
    schedule = cls.from_config(_config())
    out[cls] = (schedule, _run(schedule, _loss_feed))
  return out


def test_vdmpp_and_iddpm_reach_their_targets(importance_runs):
  schedule, vdmpp_state = importance_runs[adaptive.VDMPP]
  _, iddpm_state = importance_runs[adaptive.IDDPM]
  c_K, base_K, floor = schedule.centers(), schedule._base_pmf(), schedule.floor
  vdmpp_target_K = adaptive.mix_floor(base_K * _f(c_K), floor)  # base * E[L]
  iddpm_target_K = adaptive.mix_floor(base_K * _f(c_K) * jnp.sqrt(1 + _g(c_K) ** 2), floor)
  assert _tv(vdmpp_target_K, iddpm_target_K) > 0.04  # the feed tells the two apart
  assert _tv(vdmpp_state["pmf_K"], vdmpp_target_K) < 0.01
  assert _tv(iddpm_state["pmf_K"], iddpm_target_K) < 0.01
  # With base = loguniform, VDM++'s pi is the per-bin mean weighted loss itself.
  schedule = adaptive.VDMPP.from_config(_config(base="loguniform"))
  state = _run(schedule, _loss_feed, steps=200)
  assert _tv(state["pmf_K"], adaptive.mix_floor(_f(c_K), floor)) < 0.01


@pytest.mark.parametrize("cls", [adaptive.VDMPP, adaptive.IDDPM])
def test_importance_weights_keep_objective_unbiased(cls, importance_runs):
  schedule, state = importance_runs[cls]
  assert int(state["num_updates"]) >= schedule.warmup_steps
  # Independent reference: E_base[f] for N(p_mean, p_std^2) truncated to the grid, numpy.
  l_G = np.linspace(schedule.grid.lo, schedule.grid.hi, 40_001)
  z_G = (l_G - schedule.p_mean) / schedule.p_std
  base_G = np.exp(-0.5 * z_G**2)
  f_G = np.asarray(_f(jnp.asarray(l_G)), np.float64)
  expected = np.trapezoid(base_G * f_G, l_G) / np.trapezoid(base_G, l_G)
  # Quadrature: int p(l) weight(l) f(l) dl with the schedule's own density and weights.
  evaluate = jax.jit(lambda st, l: (schedule.density(st, l), schedule.importance_weight(st, l)))
  p_G, w_G = (np.asarray(a, np.float64) for a in evaluate(state, jnp.asarray(l_G)))
  assert np.trapezoid(p_G, l_G) == pytest.approx(1.0, abs=1e-3)
  assert np.trapezoid(p_G * w_G * f_G, l_G) == pytest.approx(expected, rel=1e-3)
  # Monte Carlo through `sample`: mean(weight * f) within 4 standard errors.
  draw = jax.jit(lambda st, k: schedule.sample(st, k, 100_000))
  sigma_N, weight_N = (np.asarray(a, np.float64) for a in draw(state, jax.random.key(7)))
  terms_N = weight_N * np.asarray(_f(jnp.log(sigma_N)), np.float64)
  assert abs(terms_N.mean() - expected) < 4.0 * terms_N.std() / math.sqrt(terms_N.size)
  assert np.ptp(np.asarray(weight_N)) > 0.1  # the weights are not trivially one


def test_edm2_learns_log_mean_loss():
  """u(sigma) -> ln E[loss | sigma], the minimizer of e^-u L + u; lossweight = e^-u."""
  schedule = adaptive.EDM2.from_config(_config())

  def feed(l_B, key):
    loss_B = jnp.exp(0.3 + 0.4 * jnp.sin(l_B)) * jax.random.exponential(key, l_B.shape)
    return loss_B / 10.0, loss_B

  state = _run(schedule, feed)
  l_G = jnp.linspace(schedule.p_mean - 2 * schedule.p_std, schedule.p_mean + 2 * schedule.p_std, 41)
  u_G = schedule.log_variance(state, jnp.exp(l_G))
  np.testing.assert_allclose(u_G, 0.3 + 0.4 * jnp.sin(l_G), atol=0.1)
  sigma_B, weight_B = schedule.sample(state, jax.random.key(3), 64)
  np.testing.assert_allclose(weight_B, jnp.exp(-schedule.log_variance(state, sigma_B)), rtol=1e-6)


@pytest.mark.parametrize("cls", [adaptive.VDMPP, adaptive.IDDPM, adaptive.CDCD])
def test_loss_weights_are_what_sample_returns_and_weight_the_density(cls, importance_runs):
  """`loss_weights(state, ln sigma)` is the weight `sample` draws with sigma, so the effective
  allocation of an importance-weighted peer (density times its weights) is its base law
  whatever pi adapted to; CDCD has no weights (its pi is its objective)."""
  schedule = cls.from_config(_config())
  state = importance_runs[cls][1] if cls in importance_runs else _run(schedule, _loss_feed)
  sigma_B, weight_B = schedule.sample(state, jax.random.key(5), 256)
  np.testing.assert_allclose(
    schedule.loss_weights(state, jnp.log(sigma_B)), weight_B, rtol=1e-6, atol=1e-7
  )
  l_G = jnp.linspace(schedule.grid.lo + 1e-3, schedule.grid.hi - 1e-3, 301)
  weighted_G = np.asarray(schedules.weighted_density(schedule, state, l_G))
  if cls is adaptive.CDCD:
    np.testing.assert_allclose(weighted_G, schedule.density(state, l_G), rtol=1e-6)
    np.testing.assert_allclose(weight_B, 1.0)
  else:
    p_G, base_G = np.asarray(schedule.density(state, l_G)), np.asarray(schedule.base_density(l_G))
    assert _tv(p_G / p_G.sum(), base_G / base_G.sum()) > 0.05  # pi adapted away from the base
    np.testing.assert_allclose(weighted_G, schedule.base_density(l_G), rtol=1e-5)


def test_edm2_weighted_density_is_the_lognormal_times_exp_minus_u():
  schedule = adaptive.EDM2.from_config(_config())
  state = schedule.init_state()
  state["params"] = {"b": jnp.float32(0.7), "v_C": 0.3 * jnp.ones_like(state["params"]["v_C"])}
  l_G = jnp.linspace(-3.0, 2.0, 11)
  u_G = schedule.log_variance(state, jnp.exp(l_G))
  expected = schedule.law.density(l_G) * np.exp(-np.asarray(u_G))
  np.testing.assert_allclose(schedules.weighted_density(schedule, state, l_G), expected, rtol=1e-6)
  assert np.ptp(np.asarray(u_G)) > 0.05  # u varies with sigma: the test sees the weighting


ALL = [adaptive.CDCD, adaptive.VDMPP, adaptive.IDDPM, adaptive.EDM2]


def _dirty_batch():
  """16 examples; entries 2, 5, 7, 11 carry NaN / Inf in the loss or in sigma."""
  sigma_B = jnp.exp(jnp.linspace(-4.0, 3.0, 16))
  loss_B = 1.0 + jnp.sin(jnp.arange(16.0)) ** 2
  dirty_loss_B = loss_B.at[2].set(jnp.nan).at[7].set(jnp.inf).at[11].set(-jnp.inf)
  dirty_sigma_B = sigma_B.at[5].set(jnp.nan)
  ok_B = np.ones(16, bool)
  ok_B[[2, 5, 7, 11]] = False
  return sigma_B, loss_B, dirty_sigma_B, dirty_loss_B, ok_B


@pytest.mark.parametrize("cls", [adaptive.CDCD, adaptive.VDMPP, adaptive.IDDPM])
def test_non_finite_entries_are_dropped_from_bins(cls):
  schedule = cls.from_config(_config(warmup_steps=0))
  sigma_B, loss_B, dirty_sigma_B, dirty_loss_B, ok_B = _dirty_batch()
  err_B, dirty_err_B = 0.5 * loss_B, 0.5 * dirty_loss_B
  state, metrics = jax.jit(schedule.update)(
    schedule.init_state(), dirty_sigma_B, dirty_err_B, dirty_loss_B
  )
  assert int(metrics[f"{schedule.name}/dropped"]) == 4
  # Reference per-bin sums and counts of the finite entries, in numpy.
  stat_B = np.asarray(schedule.statistic(err_B, loss_B), np.float64)[ok_B]
  width = (schedule.grid.hi - schedule.grid.lo) / schedule.num_bins
  idx_B = np.floor((np.log(np.asarray(sigma_B, np.float64)[ok_B]) - schedule.grid.lo) / width)
  sum_K, count_K = np.zeros(schedule.num_bins), np.zeros(schedule.num_bins)
  np.add.at(sum_K, idx_B.astype(int), stat_B)
  np.add.at(count_K, idx_B.astype(int), 1.0)
  np.testing.assert_allclose(state["sum_K"], sum_K, rtol=1e-6)
  np.testing.assert_allclose(state["count_K"], count_K)
  assert np.all(np.isfinite(state["pmf_K"])) and float(jnp.sum(state["pmf_K"])) == pytest.approx(1)


def test_non_finite_entries_are_dropped_by_edm2():
  schedule = adaptive.EDM2.from_config(_config())
  sigma_B, loss_B, dirty_sigma_B, dirty_loss_B, ok_B = _dirty_batch()
  update = jax.jit(schedule.update)
  state = schedule.init_state()
  dirty, metrics = update(state, dirty_sigma_B, dirty_loss_B, dirty_loss_B)
  clean, _ = update(state, sigma_B[ok_B], loss_B[ok_B], loss_B[ok_B])
  assert int(metrics["edm2/dropped"]) == 4
  for a, b in zip(jax.tree.leaves(dirty), jax.tree.leaves(clean), strict=True):
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(dirty["params"]["b"])) > 0  # it did learn from the finite entries


@pytest.mark.parametrize("cls", ALL)
def test_step_loop_compiles_once_with_fixed_state_shapes(cls):
  schedule = cls.from_config(_config(warmup_steps=2))
  traces = []

  @jax.jit
  def step(state, key):
    traces.append(key)  # runs only while tracing
    sigma_B, weight_B = schedule.sample(state, key, 8)
    loss_B = weight_B * jnp.log1p(sigma_B)
    return schedule.update(state, sigma_B, loss_B, loss_B)

  state0 = schedule.init_state()
  state = state0
  for t in range(4):  # crosses the end of warm-up
    state, metrics = step(state, jax.random.key(t))
  assert len(traces) == 1
  assert jax.tree.structure(state) == jax.tree.structure(state0)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(state0), strict=True):
    assert a.shape == b.shape and a.dtype == b.dtype
  assert all(m.shape == () for m in metrics.values())


def test_warmup_samples_the_base_then_the_table():
  schedule = adaptive.VDMPP.from_config(_config(warmup_steps=3))
  densities = jax.jit(lambda st, l: (schedule.density(st, l), schedule.base_density(l)))
  update = jax.jit(schedule.update)
  state = schedule.init_state()
  l_G = jnp.linspace(-8.0, 6.0, 301)
  np.testing.assert_allclose(*densities(state, l_G), rtol=1e-6)
  sigma_B, loss_B = jnp.array([0.05, 20.0]), jnp.array([1.0, 50.0])
  for _ in range(3):
    state, _ = update(state, sigma_B, loss_B, loss_B)
  pdf_G, base_G = densities(state, jnp.full((301,), math.log(20.0)))
  assert float(pdf_G[0]) > 5.0 * float(base_G[0])
  sigma_N, _ = jax.jit(lambda st, k: schedule.sample(st, k, 4096))(state, jax.random.key(0))
  assert float(jnp.min(sigma_N)) >= 0.002 * (1 - 1e-5) and float(jnp.max(sigma_N)) <= 80.0 * 1.0001


@pytest.mark.parametrize(
  "key,value,cls",
  [
    ("floor", 0.0, adaptive.VDMPP),
    ("ema_beta", 1.0, adaptive.IDDPM),
    ("num_bins", 1, adaptive.CDCD),
    ("base", "uniform", adaptive.VDMPP),
    ("cdcd_signal", "grad", adaptive.CDCD),
    ("edm2_lr", 0.0, adaptive.EDM2),
    ("edm2_lr", math.inf, adaptive.EDM2),  # passed > 0, then the first steps were NaN
    ("edm2_channels", 0, adaptive.EDM2),
  ],
)
def test_invalid_values_name_the_key(key, value, cls):
  with pytest.raises(ValueError, match=rf"schedule\.adaptive\.{key}"):
    cls.from_config(_config(**{key: value}))


def test_cdcd_floor_dominates_its_effective_allocation_at_low_noise():
  """CDCD has no importance weights, so its uniform floor is part of the objective: on bits
  (mmse closed form) its few draws below sigma = 0.01 carry most of pi * w, since the EDM
  weight grows like 1 / sigma^2 there; with a negligible floor they carry almost none
  (docs/schedules.md, under the table)."""
  from infonoise_jax import edm, profiles
  from infonoise_jax.schedules.base import weighted_density

  sigma_data = 0.5
  grid_G = jnp.linspace(math.log(0.002), math.log(80.0), 2001)
  sigma_G = np.exp(np.asarray(grid_G))

  def feed(l_B, key):
    err_B = profiles.binary_mmse(jnp.exp(l_B), 0.5)
    return err_B, err_B

  shares = {}
  for floor in (0.01, 1e-6):
    schedule = adaptive.CDCD.from_config(_config(floor=floor))
    state = _run(schedule, feed)
    density_G = np.asarray(weighted_density(schedule, state, grid_G), np.float64)
    phi_G = density_G * np.asarray(edm.loss_weight(jnp.asarray(sigma_G), sigma_data))
    low = sigma_G < 0.01
    shares[floor] = (density_G[low].sum() / density_G.sum(), phi_G[low].sum() / phi_G.sum())
  draws, allocation = shares[0.01]
  assert draws < 0.01 and allocation > 0.5
  assert shares[1e-6][1] < 0.05
