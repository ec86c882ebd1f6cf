"""Tests of edm.py against EDM's closed forms (Karras et al. 2022, Table 1 and section 5)."""

import jax.numpy as jnp
import numpy as np
import pytest

from infonoise_jax import edm, profiles

SIGMA = np.array([0.002, 0.05, 0.5, 1.0, 7.0, 80.0], np.float32)


@pytest.mark.parametrize("sd", [0.5, 1.0, 0.2])
def test_preconditioning_gives_unit_variance_input_and_target(sd):
  c_skip, c_out, c_in, c_noise = (np.asarray(c, np.float64) for c in edm.preconditioning(SIGMA, sd))
  s = SIGMA.astype(np.float64)
  np.testing.assert_allclose(c_in**2 * (sd**2 + s**2), 1.0, rtol=1e-6)  # Var(c_in x) = 1
  # The network's target F = (x0 - c_skip x) / c_out has unit variance for Var(x0) = sd^2.
  target_var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * s**2) / c_out**2
  np.testing.assert_allclose(target_var, 1.0, rtol=1e-5)
  np.testing.assert_allclose(c_skip, sd**2 / (s**2 + sd**2), rtol=1e-6)
  np.testing.assert_allclose(c_noise, np.log(s) / 4, rtol=1e-6)
  # lambda(sigma) = 1 / c_out^2 (EDM eq. 8's effective weight).
  np.testing.assert_allclose(edm.loss_weight(SIGMA, sd), 1.0 / c_out**2, rtol=1e-5)


def test_zero_network_is_the_bayes_denoiser_of_gaussian_data():
  sd = 0.5
  x_BHWC = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4, 4, 2)), jnp.float32)
  zero_net = lambda x, c_noise: jnp.zeros_like(x)
  got = edm.denoise(zero_net, x_BHWC, jnp.asarray(SIGMA), sd)
  want = profiles.gaussian_denoiser(x_BHWC.reshape(6, -1), jnp.asarray(SIGMA), 0.0, sd)
  np.testing.assert_allclose(got.reshape(6, -1), want, rtol=1e-6)


def test_denoise_feeds_the_network_the_preconditioned_input():
  seen = {}

  def net(x_in, c_noise):
    seen["x_in"], seen["c_noise"] = x_in, c_noise
    return jnp.ones_like(x_in).astype(jnp.bfloat16)  # a bf16 network output

  x_BD = jnp.full((6, 3), 2.0)
  out = edm.denoise(net, x_BD, jnp.asarray(SIGMA), 0.5)
  c_skip, c_out, c_in, c_noise = edm.preconditioning(jnp.asarray(SIGMA), 0.5)
  np.testing.assert_allclose(seen["x_in"], 2.0 * c_in[:, None] * np.ones((6, 3)), rtol=1e-6)
  np.testing.assert_allclose(seen["c_noise"], c_noise)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, (2.0 * c_skip + c_out)[:, None] * np.ones((6, 3)), rtol=1e-6)


def test_add_noise_and_per_example_error():
  x0_BD = jnp.arange(12.0).reshape(4, 3)
  eps_BD = jnp.ones((4, 3))
  sigma_B = jnp.array([0.0, 1.0, 2.0, 3.0])
  x_BD = edm.add_noise(x0_BD, sigma_B, eps_BD)
  np.testing.assert_array_equal(x_BD - x0_BD, np.repeat(np.arange(4.0)[:, None], 3, axis=1))
  err_B = edm.per_example_error(x_BD.astype(jnp.bfloat16), x0_BD)
  np.testing.assert_allclose(err_B, np.arange(4.0) ** 2)  # mean over dims of sigma^2 * 1
  assert err_B.dtype == jnp.float32
