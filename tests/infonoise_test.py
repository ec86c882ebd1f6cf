"""Tests for the InfoNoise estimator: convergence to closed-form profiles from Bayes-optimal errors,
sampling goodness-of-fit, sharding equivalence, compile-once, robustness and validation."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import default
from infonoise_jax import profiles
from infonoise_jax.schedules.base import Schedule
from infonoise_jax.schedules.infonoise import InfoNoise

SD = 0.5
STEPS, BATCH = 300, 256
FAST = dict(
  num_bins=64, refresh_every=20, warmup_steps=20, floor=0.05, gate="pinned", gate_pivot=0.2
)


def _simulate(sched, denoise_fn, draw_x0, num_steps, batch, seed=0):
  """Runs sample -> Bayes-optimal error -> update for num_steps inside one jitted scan."""
  key = jax.random.key(seed)

  def body(state, step):
    ks, kx, ke = jax.random.split(jax.random.fold_in(key, step), 3)
    sigma_B, _ = sched.sample(state, ks, batch)
    x0_BD = draw_x0(kx, batch)
    x_BD = x0_BD + sigma_B[:, None] * jax.random.normal(ke, x0_BD.shape)
    err_B = jnp.mean(jnp.square(denoise_fn(x_BD, sigma_B) - x0_BD), axis=-1)
    state, metrics = sched.update(state, sigma_B, err_B, err_B)
    return state, metrics["infonoise/max_dcdf"]

  run = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(num_steps)))
  return run(sched.init_state())


def _analytic_rho(sched, mmse_fn, pivot):
  x_K = sched.grid.centres()
  q_K = profiles.entropy_rate(mmse_fn(jnp.exp(x_K)), jnp.exp(x_K))
  return profiles.gated_profile(x_K, q_K, pivot, sched.gate_power)


def _tv_to(sched, state, rho_ref_K):
  _, rho_K = sched.profile(state)
  return float(profiles.allocation_mismatch(rho_K, rho_ref_K))


# ------------------------------------------------------------------- convergence (issue 2 bar)
@pytest.fixture(scope="module")
def gaussian_run():
  s = 0.5
  sched = InfoNoise(**FAST)
  draw = lambda k, b: s * jax.random.normal(k, (b, 8))
  denoise = lambda x, sg: profiles.gaussian_denoiser(x, sg, 0.0, s)
  state, dcdf_T = _simulate(sched, denoise, draw, STEPS, BATCH)
  return sched, state, dcdf_T, s


def test_gaussian_profile_converges(gaussian_run):
  sched, state, dcdf_T, s = gaussian_run
  ref_K = _analytic_rho(sched, lambda sg: profiles.gaussian_mmse(sg, s), 0.2)
  assert _tv_to(sched, state, ref_K) < 0.05
  assert int(state["refreshes"]) == (STEPS - 20) // 20 + 1
  assert float(dcdf_T[-1]) < 1e-2  # docs/method.md 4.9: converged table


def test_mixture_profile_converges_8d():
  means_ND = jax.random.normal(jax.random.key(3), (6, 8))
  stds_N = jnp.array([0.05, 0.1, 0.1, 0.2, 0.2, 0.3])
  w_N = jnp.array([0.1, 0.2, 0.2, 0.2, 0.2, 0.1])

  def draw(k, b):
    kn, kz = jax.random.split(k)
    n_B = jax.random.choice(kn, 6, (b,), p=w_N)
    return means_ND[n_B] + stds_N[n_B, None] * jax.random.normal(kz, (b, 8))

  sched = InfoNoise(**FAST)
  denoise = lambda x, sg: profiles.mixture_denoiser(x, sg, means_ND, stds_N, w_N)
  state, _ = _simulate(sched, denoise, draw, STEPS, BATCH)
  mmse = lambda sg: profiles.mixture_mmse(jax.random.key(9), sg, means_ND, stds_N, w_N, 8192)
  ref_K = _analytic_rho(sched, mmse, 0.2)
  assert _tv_to(sched, state, ref_K) < 0.05


@pytest.fixture(scope="module")
def binary_run():
  a = 0.5
  sched = InfoNoise(**{**FAST, "gate": "onset"})
  draw = lambda k, b: a * jnp.sign(jax.random.normal(k, (b, 8)))
  state, _ = _simulate(sched, lambda x, sg: profiles.binary_denoiser(x, sg, a), draw, STEPS, BATCH)
  return sched, state, a


def test_binary_profile_converges_and_onset_below_peak(binary_run):
  sched, state, a = binary_run
  x_K = sched.grid.centres()
  q_K = profiles.entropy_rate(profiles.binary_mmse(jnp.exp(x_K), a), jnp.exp(x_K))
  c_exact = float(profiles.onset_pivot(x_K, q_K, sched.onset_threshold))
  c_est = float(state["gate_pivot"])
  assert abs(math.log(c_est / c_exact)) < 0.1
  assert c_est < 0.6 * float(jnp.exp(x_K[jnp.argmax(q_K)]))  # the gate keeps the window
  ref_K = profiles.gated_profile(x_K, q_K, c_est, sched.gate_power)
  assert _tv_to(sched, state, ref_K) < 0.05


def _peak_sigma(sched, state):
  """Argmax of the ungated entropy rate q = m / sigma^2 (docs/method.md 4.4) of the estimate."""
  x_K = sched.grid.centres()
  return math.exp(float(x_K[jnp.argmax(state["m_K"] / jnp.exp(2 * x_K))]))


def test_binary_peaks_far_above_continuous_of_same_variance(binary_run, gaussian_run):
  sched, state_bin, a = binary_run
  _, state_g, _, s = gaussian_run
  assert a == s
  assert 0.3 < _peak_sigma(sched, state_bin) < 0.6  # closed form: 0.41
  # Gaussian: q >= 0.92 max(q) only below sigma = 0.15 (closed form); binary: q peaks at 0.41
  assert _peak_sigma(sched, state_bin) > 2.5 * _peak_sigma(sched, state_g)


# ------------------------------------------------------------------- sampling
N_DRAWS = 20000
KS_TOL = 1.63 / math.sqrt(N_DRAWS)  # Kolmogorov-Smirnov critical value at alpha = 0.01


def _draw_and_density(sched, x_G):
  """One jitted function: N_DRAWS samples and the density on the fixed points x_G."""
  return jax.jit(lambda state, key: (*sched.sample(state, key, N_DRAWS), sched.density(state, x_G)))


def _ks(sigma_B, cdf_fn):
  """KS statistic of ln sigma_B against the model CDF `cdf_fn` (numpy, float64)."""
  xs = np.sort(np.log(np.asarray(sigma_B, np.float64)))
  model = cdf_fn(xs)
  n = xs.size
  return max(np.max(np.arange(1, n + 1) / n - model), np.max(model - np.arange(n) / n))


@pytest.fixture(scope="module")
def table_case():
  """A schedule with a non-trivial table (a two-bump profile, one refresh) and its sampler."""
  sched = InfoNoise(num_bins=32, smoothing=0.0)
  x_K = np.asarray(sched.grid.centres())
  m_K = np.exp(2 * x_K) * (np.exp(-((x_K + 2) ** 2)) + 0.3 * np.exp(-((x_K - 1) ** 2)))
  state = {**sched.init_state(), "sums_K": jnp.asarray(m_K * 10), "counts_K": jnp.full(32, 10.0)}
  state = jax.jit(sched._refresh)(state)
  fine_G = np.linspace(math.log(1e-4), math.log(1e3), 40001)
  x_G = np.concatenate([fine_G, x_K, [-1.2]]).astype(np.float32)
  return sched, state, _draw_and_density(sched, x_G), fine_G


def test_samples_follow_table_and_density_matches(table_case):
  sched, state, fn, fine_G = table_case
  sigma_B, lw_B, pdf_G = fn(state, jax.random.key(1))
  x_E, cdf_E = (np.asarray(a, np.float64) for a in (sched.grid.edges(), state["cdf_E"]))
  assert _ks(sigma_B, lambda x: np.interp(x, x_E, cdf_E)) < KS_TOL
  np.testing.assert_array_equal(np.asarray(lw_B), 1.0)
  n = fine_G.size
  assert abs(float(np.sum(pdf_G[:n])) * (fine_G[1] - fine_G[0]) - 1.0) < 2e-3
  np.testing.assert_allclose(pdf_G[n : n + 32] * sched.bin_width, np.diff(cdf_E), rtol=1e-5)


def test_base_distribution_before_first_refresh(table_case):
  sched, _, fn, _ = table_case
  sigma_B, _, pdf_G = fn(sched.init_state(), jax.random.key(2))
  normal_cdf = np.vectorize(lambda x: 0.5 * (1 + math.erf((x + 1.2) / (1.2 * math.sqrt(2)))))
  assert _ks(sigma_B, normal_cdf) < KS_TOL  # EDM log-normal, P_mean -1.2, P_std 1.2
  np.testing.assert_allclose(pdf_G[-1], 1 / (1.2 * math.sqrt(2 * math.pi)), rtol=1e-5)
  uni = InfoNoise(num_bins=32, base="loguniform")
  sigma_B = jax.jit(uni.sample, static_argnums=2)(uni.init_state(), jax.random.key(3), N_DRAWS)[0]
  lo, hi = math.log(0.002), math.log(80.0)
  assert _ks(sigma_B, lambda x: np.clip((x - lo) / (hi - lo), 0, 1)) < KS_TOL


# ------------------------------------------------------------------- sharding and compilation
def _update_run(sched, sigma_TB, err_TB, shardings=None):
  def run(state, sigma_TB, err_TB):
    def body(st, xs):
      st, _ = sched.update(st, xs[0], xs[1], xs[1])
      return st, None

    return jax.lax.scan(body, state, (sigma_TB, err_TB))[0]

  if shardings is not None:
    sigma_TB, err_TB = (jax.device_put(a, shardings) for a in (sigma_TB, err_TB))
  return jax.jit(run)(sched.init_state(), sigma_TB, err_TB)


def test_one_device_and_eight_devices_agree():
  assert jax.device_count() == 8
  sched = InfoNoise(num_bins=32, refresh_every=3, warmup_steps=2, gate="onset")
  k1, k2 = jax.random.split(jax.random.key(0))
  sigma_TB = jnp.exp(jax.random.uniform(k1, (10, 64), minval=-6, maxval=4))
  err_TB = profiles.gaussian_mmse(sigma_TB, 0.5) * jax.random.exponential(k2, (10, 64))
  single = _update_run(sched, sigma_TB, err_TB)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharded = _update_run(sched, sigma_TB, err_TB, NamedSharding(mesh, P(None, "data")))
  assert int(sharded["refreshes"]) == 3
  for k in single:
    np.testing.assert_allclose(
      np.asarray(single[k]), np.asarray(sharded[k]), rtol=1e-5, atol=1e-7, err_msg=k
    )


def _all_primitives(jaxpr):
  """Primitive names in a jaxpr and all sub-jaxprs (scan/cond/pjit bodies)."""
  for eqn in jaxpr.eqns:
    yield eqn.primitive.name
    for v in eqn.params.values():
      for sub in v if isinstance(v, (tuple, list)) else (v,):
        if hasattr(sub, "eqns"):
          yield from _all_primitives(sub)
        elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
          yield from _all_primitives(sub.jaxpr)


def test_step_has_no_callbacks_and_compiles_once():
  sched = InfoNoise(num_bins=16, refresh_every=3, warmup_steps=4)

  @jax.jit
  def step_fn(state, key):
    sigma_B, _ = sched.sample(state, key, 32)
    err_B = profiles.gaussian_mmse(sigma_B, 0.5)
    return sched.update(state, sigma_B, err_B, err_B)

  state = sched.init_state()
  jaxpr = jax.make_jaxpr(step_fn)(state, jax.random.key(0)).jaxpr
  assert not [p for p in _all_primitives(jaxpr) if "callback" in p]
  for i in range(14):
    state, metrics = step_fn(state, jax.random.key(i))
  assert step_fn._cache_size() == 1
  assert int(metrics["infonoise/refreshes"]) == 4  # after updates 4, 7, 10, 13
  assert int(state["num_updates"]) == 14
  assert isinstance(sched, Schedule) and hash(sched) == hash(InfoNoise(**vars(sched)))


# ------------------------------------------------------------------- robustness
def _checked_update(sched):
  """Jitted update that also returns the density and profile on the bin centres."""

  def fn(state, sigma_B, err_B):
    state, metrics = sched.update(state, sigma_B, err_B, err_B)
    return state, metrics, sched.density(state, sched.grid.centres()), sched.profile(state)[1]

  return jax.jit(fn)


def _assert_valid(sched, state, pdf_K, rho_K):
  for f_K in (pdf_K, rho_K):
    assert bool(jnp.all(jnp.isfinite(f_K)) & jnp.all(f_K >= 0))
    assert abs(float(jnp.sum(f_K)) * sched.bin_width - 1.0) < 1e-4
  assert bool(jnp.all(pdf_K > 0))  # floor > 0
  for v in jax.tree.leaves(state):
    assert bool(jnp.all(jnp.isfinite(v))), state


def test_nonfinite_errors_dropped_and_counted():
  sched = InfoNoise(num_bins=16, refresh_every=1, warmup_steps=1, min_count=1)
  sigma_B = jnp.array([0.1, 0.1, 1.0, 1.0, jnp.nan, 2.0])
  err_B = jnp.array([jnp.nan, 0.01, jnp.inf, 0.5, 0.3, -jnp.inf])
  state, metrics, pdf_K, rho_K = _checked_update(sched)(sched.init_state(), sigma_B, err_B)
  assert int(metrics["infonoise/dropped"]) == 4
  _assert_valid(sched, state, pdf_K, rho_K)
  i_01, i_1 = np.floor((np.log([0.1, 1.0]) - math.log(0.002)) / sched.bin_width).astype(int)
  np.testing.assert_allclose(state["m_K"][np.array([i_01, i_1])], [0.01, 0.5], rtol=1e-6)


@pytest.mark.parametrize("gate", ["onset", "onset_literal"])
def test_empty_and_extreme_batches_keep_density_valid(gate):
  sched = InfoNoise(num_bins=16, refresh_every=1, warmup_steps=1, gate=gate, floor=0.01)
  update = _checked_update(sched)
  state = sched.init_state()
  batches = [
    (jnp.full((4,), 0.3), jnp.zeros(4)),  # zero error (Bayes error underflows); 15 bins empty
    (jnp.full((4,), 0.01), jnp.full((4,), 3e38)),  # huge errors
    (jnp.array([1e-9, 1e9, 0.0, -1.0]), jnp.ones(4)),  # out-of-range sigma: nothing recorded
  ]
  for sigma_B, err_B in batches:
    state, metrics, pdf_K, rho_K = update(state, sigma_B, err_B)
    _assert_valid(sched, state, pdf_K, rho_K)
  assert int(state["refreshes"]) == 3
  assert float(jnp.sum(state["counts_K"])) == 0.0


def test_single_sample_batches_and_min_count_carry_over():
  """Bins below min_count keep their value and their samples for the next window (ours)."""
  sched = InfoNoise(num_bins=8, refresh_every=1, warmup_steps=1, min_count=3, smoothing=0.0)
  update = _checked_update(sched)
  state = sched.init_state()
  for e in [2.0, 4.0, 6.0]:
    state, _, pdf_K, rho_K = update(state, jnp.array([1.0]), jnp.array([e]))
    _assert_valid(sched, state, pdf_K, rho_K)
  k = int((0.0 - math.log(0.002)) / sched.bin_width)
  assert float(state["m_K"][k]) == pytest.approx(4.0, rel=1e-6)  # mean of all three
  assert float(state["counts_K"][k]) == 0.0 and int(state["refreshes"]) == 3


def test_unseen_bins_interpolated_in_log_sigma():
  sched = InfoNoise(num_bins=8, smoothing=0.0)
  seen_K = jnp.array([False, True, False, False, True, False, False, False])
  m_K = jnp.where(seen_K, jnp.array([0, 1.0, 0, 0, 8.0, 0, 0, 0]), 1.0)
  filled_K = sched._fill_unseen(m_K, seen_K)
  want = [math.exp(-2 * sched.bin_width), 1, 2, 4, 8, 8, 8, 8]  # geometric inside, m~s^2 below
  np.testing.assert_allclose(filled_K, want, rtol=1e-5)


# ------------------------------------------------------------------- config
def test_from_config_and_validation():
  config = default.get_config()
  sched = InfoNoise.from_config(config)
  assert sched.num_bins == config.schedule.infonoise.num_bins
  assert sched.sigma_data == config.edm.sigma_data
  assert sched.base_p_mean == config.schedule.lognormal.p_mean
  bad = {
    "num_bins": 1,
    "onset_threshold": 1.5,
    "ema_beta": 1.0,
    "refresh_every": 0,
    "floor": -0.1,
    "gate": "magic",
    "base": "uniform",
  }
  for key, value in bad.items():
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.schedule.infonoise[key] = value
    with pytest.raises(ValueError, match=f"schedule.infonoise.{key} "):
      InfoNoise.from_config(cfg)


@pytest.mark.parametrize("held", [0, 1, 2])
def test_onset_refreshes_holds_the_pivot_after_n_refreshes(held):
  sched = InfoNoise(
    num_bins=32,
    refresh_every=1,
    warmup_steps=1,
    min_count=1,
    smoothing=0.0,
    ema_beta=0.0,
    gate="onset",
    onset_refreshes=held,
  )
  sigma_K = jnp.exp(sched.grid.centres())
  state, pivots = sched.init_state(), []
  for std in (0.5, 0.05, 0.05):  # Gaussian data whose scale changes after the first refresh
    err_K = profiles.gaussian_mmse(sigma_K, std)
    state, _ = sched.update(state, sigma_K, err_K, err_K)
    pivots.append(float(state["gate_pivot"]))
  assert pivots[0] == pytest.approx(0.25, rel=0.1)  # c = std / 2 for Gaussian data
  if held == 1:
    assert pivots[1] == pivots[2] == pivots[0]
  else:  # the rule follows the new profile (from the second refresh on, or always)
    assert pivots[1] == pytest.approx(0.025, rel=0.1)
    assert pivots[2] == pivots[1]
  with pytest.raises(ValueError, match="schedule.infonoise.onset_refreshes"):
    InfoNoise(onset_refreshes=-1)


@pytest.mark.parametrize(
  "variant, setting",
  [
    ("fashion", (False, "pinned", 0.15)),
    ("fashion,infonoise", (False, "pinned", 0.15)),
    ("fashion,binarized", (True, "onset", 0.2)),
    ("binarized,fashion", (True, "onset", 0.2)),
    ("", (True, "onset", 0.2)),
  ],
)
def test_fashion_recipe_sets_the_continuous_image_setting_only(variant, setting):
  """configs/default.py:fashion: continuous images without compensation, gate pinned at 0.15
  (experiments/RESULTS.md section 14); binarized Fashion and other data keep the library's
  setting, whatever the order of the variant tokens."""
  c = default.get_config(variant).schedule.infonoise
  assert (c.compensate, c.gate, c.gate_pivot) == setting
  assert InfoNoise.from_config(default.get_config(variant)).compensate is setting[0]


@pytest.mark.parametrize("pivot", [1000.0, 1e-4])
def test_a_pinned_pivot_outside_the_noise_range_is_refused(pivot):
  """Pinned at c outside [sigma_min, sigma_max] the gate is ~0 or ~1 everywhere (all mass
  piles into the top bins, or no gate at all): refused naming the key, the range and the fix.
  The onset rules only start from the pivot, so the same value is accepted there."""
  c = default.get_config()
  c.schedule.infonoise.gate, c.schedule.infonoise.gate_pivot = "pinned", pivot
  with pytest.raises(ValueError, match=r"gate_pivot = .* outside the noise range .*gate=none"):
    InfoNoise.from_config(c)
  c.schedule.infonoise.gate = "onset"
  assert InfoNoise.from_config(c).gate_pivot == pivot
