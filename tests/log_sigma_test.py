"""Tests of the ln-sigma grid and the base laws against numpy and closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import default
from infonoise_jax import log_sigma


def test_grid_edges_index_and_record_match_numpy():
  grid = log_sigma.LogSigmaGrid(16, 0.002, 80.0)
  edges = np.linspace(math.log(0.002), math.log(80.0), 17)
  np.testing.assert_allclose(grid.edges(), edges, rtol=1e-6)
  np.testing.assert_allclose(grid.centres_np(), 0.5 * (edges[1:] + edges[:-1]))
  assert grid.width == pytest.approx(edges[1] - edges[0])
  rng = np.random.default_rng(0)
  l_B = rng.uniform(grid.lo - 1.0, grid.hi + 1.0, 500).astype(np.float32)
  v_B = rng.standard_normal(500).astype(np.float32)
  valid_B = rng.random(500) < 0.7
  v_B[~valid_B] = np.nan  # invalid entries may hold anything
  idx_B = np.clip(np.searchsorted(edges, l_B, side="right") - 1, 0, 15)
  np.testing.assert_array_equal(grid.index(jnp.asarray(l_B)), idx_B)
  sums_K, counts_K = jax.jit(grid.record)(l_B, v_B, valid_B)
  want_sums, want_counts = np.zeros(16), np.zeros(16)
  np.add.at(want_sums, idx_B[valid_B], v_B[valid_B])
  np.add.at(want_counts, idx_B[valid_B], 1.0)
  np.testing.assert_allclose(sums_K, want_sums, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(counts_K, want_counts)


def test_step_density_integrates_to_one_on_the_grid():
  grid = log_sigma.LogSigmaGrid(8, 0.01, 10.0)
  pmf_K = jnp.asarray(np.random.default_rng(1).dirichlet(np.ones(8)), jnp.float32)
  l_G = np.linspace(grid.lo - 1, grid.hi + 1, 200_001)
  pdf_G = np.asarray(grid.step_density(pmf_K, jnp.asarray(l_G)))
  assert np.trapezoid(pdf_G, l_G) == pytest.approx(1.0, abs=1e-3)
  assert pdf_G[0] == 0.0 and pdf_G[-1] == 0.0


def test_fill_unseen_interpolates_holds_above_and_extrapolates_below():
  seen = jnp.array([False, True, False, False, True, False])
  est = jnp.array([9.0, 1.0, 9.0, 9.0, 4.0, 9.0])
  np.testing.assert_allclose(log_sigma.fill_unseen(est, seen), [1, 1, 2, 3, 4, 4], atol=1e-6)
  below = log_sigma.fill_unseen(est, seen, slope_below=0.5)
  np.testing.assert_allclose(below, [0.5, 1, 2, 3, 4, 4], atol=1e-6)
  none = jnp.zeros(6, jnp.bool_)
  np.testing.assert_array_equal(log_sigma.fill_unseen(est, none), est)
  np.testing.assert_array_equal(log_sigma.fill_unseen(est, none, if_none_seen=1.0), 1.0)


@pytest.mark.parametrize("truncate", [False, True])
def test_lognormal_law_matches_scipy(truncate):
  law = log_sigma.LogNormalLaw(-1.2, 1.2)
  ref = stats.norm(-1.2, 1.2)
  lo, hi = math.log(0.002), math.log(80.0)
  if truncate:
    law = law.truncated(lo, hi)
    ref = stats.truncnorm((lo + 1.2) / 1.2, (hi + 1.2) / 1.2, -1.2, 1.2)
  l_G = np.linspace(-5.0, 3.0, 101)
  np.testing.assert_allclose(law.density(jnp.asarray(l_G)), ref.pdf(l_G), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(law.cdf(jnp.asarray(l_G)), ref.cdf(l_G), atol=1e-6)
  u = np.linspace(0.01, 0.99, 99)
  np.testing.assert_allclose(law.inverse_cdf(jnp.asarray(u)), ref.ppf(u), atol=2e-4)
  x = np.asarray(law.sample(jax.random.key(0), 20_000), np.float64)
  assert stats.kstest(x, ref.cdf).pvalue > 1e-3
  if truncate:
    assert x.min() >= lo and x.max() <= hi


def test_loguniform_law_matches_scipy():
  law = log_sigma.LogUniformLaw(-2.0, 3.0)
  ref = stats.uniform(-2.0, 5.0)
  l_G = np.linspace(-3.0, 4.0, 71)
  np.testing.assert_allclose(law.density(jnp.asarray(l_G)), ref.pdf(l_G), atol=1e-7)
  np.testing.assert_allclose(law.cdf(jnp.asarray(l_G)), ref.cdf(l_G), atol=1e-6)
  np.testing.assert_allclose(law.inverse_cdf(jnp.asarray([0.0, 0.5, 1.0])), [-2, 0.5, 3])
  x = np.asarray(law.sample(jax.random.key(0), 20_000), np.float64)
  assert stats.kstest(x, ref.cdf).pvalue > 1e-3
  assert law.truncated(-1.0, 5.0) == log_sigma.LogUniformLaw(-1.0, 3.0)


@pytest.mark.parametrize(
  "edits, key",
  [
    ({"edm.sigma_min": 0.0}, "edm.sigma_min"),
    ({"edm.sigma_min": float("nan")}, "edm.sigma_min"),
    ({"edm.sigma_max": 0.001}, "edm.sigma_max"),
    ({"edm.sigma_max": float("inf")}, "edm.sigma_max"),
  ],
)
def test_sigma_range_names_the_bad_key(edits, key):
  config = default.get_config()
  assert log_sigma.sigma_range(config) == (0.002, 80.0)
  config.update_from_flattened_dict(edits)
  with pytest.raises(ValueError, match=key):
    log_sigma.sigma_range(config)
