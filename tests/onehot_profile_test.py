"""The one-hot encoding's closed-form mmse against the InfoNoise estimator on a trained model.

Data: windows of 8 independent tokens over V = 4 symbols with skewed frequencies, encoded by
`TokenEncoding` (scale 1). For independent positions the Bayes denoiser is the per-position
categorical posterior, so `profiles.onehot_mmse` is the exact mmse. A small MLP denoiser is
trained for real with the project's train step and InfoNoise schedule; the estimator's learned
per-bin error m_K must match the closed form within the stated tolerance, and the learned
entropy rate m/sigma^2 must peak where the closed form does.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from infonoise_jax import profiles, steps
from infonoise_jax.data.tokens import TokenEncoding
from infonoise_jax.models import make_model
from infonoise_jax.schedules import make_schedule
from infonoise_jax.train_state import make_optimizer

PROBS = np.array([0.4, 0.3, 0.2, 0.1])
LENGTH, STEPS, BATCH = 8, 800, 256


def _config():
  c = default.get_config()
  c.model.name, c.model.hidden_dims = "mlp", (256, 256)
  c.edm.sigma_data = TokenEncoding("ACGT").sigma_data
  c.optim.lr, c.optim.warmup_steps = 2e-3, 50
  c.train.batch_size = BATCH
  i = c.schedule.infonoise
  i.num_bins, i.warmup_steps, i.refresh_every, i.min_count = 32, 100, 50, 4
  i.ema_beta, i.floor, i.smoothing = 0.5, 0.1, 0.0  # forget early errors; visit every bin
  i.gate, i.gate_pivot = "pinned", 0.2
  return c


@pytest.fixture(scope="module")
def trained():
  unoptimized = jax.config.read("jax_disable_most_optimizations")
  config, enc = _config(), TokenEncoding("ACGT")
  model, schedule = make_model(config, (LENGTH, 4)), make_schedule(config)
  optimizer = make_optimizer(config)
  state = steps.init_state(model, schedule, optimizer, (LENGTH, 4), 0)
  step_fn = jax.jit(steps.make_train_step(config, model, schedule, optimizer))
  batch = jax.ShapeDtypeStruct((BATCH, LENGTH, 4), jnp.float32)
  # The conftest compiles unoptimized (most tests run a program a few times); this one step
  # runs 800 times, which an optimized compile makes about twice as fast. Same program.
  jax.config.update("jax_disable_most_optimizations", False)
  try:
    step_fn = step_fn.lower(state, batch).compile()
  finally:
    jax.config.update("jax_disable_most_optimizations", unoptimized)
  rng = np.random.default_rng(0)
  for _ in range(STEPS):
    ids = rng.choice(4, size=(BATCH, LENGTH), p=PROBS)
    state, _ = step_fn(state, jnp.asarray(enc.encode(ids)))
  return schedule, jax.device_get(state.schedule_state)


def test_learned_mmse_matches_onehot_closed_form_and_peaks_where_it_does(trained):
  schedule, s = trained
  log_sigma_K = np.asarray(schedule.profile(s)[0])
  sigma_K = np.exp(log_sigma_K)
  exact_K = np.asarray(
    profiles.onehot_mmse(jax.random.key(0), jnp.asarray(sigma_K), PROBS, 1.0, 20000)
  )
  m_K = np.asarray(s["m_K"])
  # Tolerance: within 0.1 of the mmse's range (0 .. sum p(1-p)/V = 0.175) over sigma in
  # [0.02, 20]; the model's error can only exceed the Bayes mmse, up to Monte Carlo noise.
  window = (sigma_K > 0.02) & (sigma_K < 20)
  scale = exact_K.max()
  assert np.max(np.abs(m_K - exact_K)[window]) < 0.1 * scale
  assert np.min((m_K - exact_K)[window]) > -0.03 * scale
  # Peak of the gated entropy rate rho = g(sigma) mmse / sigma^2 that InfoNoise samples from:
  # within one bin (0.33 in ln sigma) of the closed form's.
  rho_exact = np.asarray(
    profiles.gated_profile(jnp.asarray(log_sigma_K), exact_K / sigma_K**2, 0.2, 3.0)
  )
  rho_est = np.asarray(schedule.profile(s)[1])
  peak_exact, peak_est = log_sigma_K[np.argmax(rho_exact)], log_sigma_K[np.argmax(rho_est)]
  assert abs(peak_est - peak_exact) <= 0.34
  assert 0.3 < np.exp(peak_exact) < 0.8  # one-hot of scale 1: far above images' ~0.05-0.1
  # Ungated, the learned rate m/sigma^2 is dominated below sigma ~ 0.1 by the model's residual
  # error (about 1-2% of the mmse range, while the exact mmse is ~0 there); the gate removes it.
  low = sigma_K < 0.1
  assert np.all(m_K[low] < 0.03 * scale)


def test_closed_form_reduces_to_binary_and_high_noise_limit():
  sigma_G = jnp.exp(jnp.linspace(-4.0, 4.0, 17))
  # V = 2: codewords +-(1/2)(1, -1) are bits of scale 1/sqrt(2) along (1, -1)/sqrt(2), so the
  # per-dim mmse is binary_mmse(sigma, 1/sqrt(2)) / 2.
  two = profiles.onehot_mmse(jax.random.key(1), sigma_G, np.array([0.5, 0.5]), 1.0, 40000)
  binary = profiles.binary_mmse(sigma_G, 1.0 / np.sqrt(2.0)) / 2.0
  np.testing.assert_allclose(two, binary, atol=0.004)
  # sigma -> infinity: the posterior is the prior; mmse = a^2 sum_k p_k (1 - p_k) / V
  high = profiles.onehot_mmse(jax.random.key(2), jnp.array([1e4]), PROBS, 2.0, 20000)
  np.testing.assert_allclose(high, 4.0 * np.sum(PROBS * (1 - PROBS)) / 4, rtol=1e-3)
