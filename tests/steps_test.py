"""Tests of steps.py on its own: golden train-step values, init, the denoiser, the loss."""

import json
import pathlib

import golden
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from infonoise_jax import edm, steps
from infonoise_jax.data import Pipeline, load_source
from infonoise_jax.models import make_model
from infonoise_jax.schedules import make_schedule
from infonoise_jax.train_state import make_optimizer, step_keys

FIXTURE = pathlib.Path(__file__).with_name("fixtures") / "golden_train_step.json"


@pytest.mark.parametrize("schedule", golden.SCHEDULES)
def test_train_steps_match_recorded_golden_values(schedule):
  # Recorded from the code before the evaluation-side refactor (issue 8); a change here is a
  # change in what training computes, and needs a re-recording with its reason in the commit.
  want = json.loads(FIXTURE.read_text())[schedule]
  got = golden.run_golden(schedule)
  assert sorted(got["schedule_state"]) == sorted(want["schedule_state"])
  np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
  np.testing.assert_allclose(got["learning_rate"], want["learning_rate"], rtol=1e-6)
  for key in ("params", "ema_params", "update"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
  for key, value in want["schedule_state"].items():
    np.testing.assert_allclose(got["schedule_state"][key], value, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.fixture(scope="module")
def parts():
  """configs/test.py's model, InfoNoise schedule, optimizer and one digits batch."""
  config = golden.golden_config("infonoise")
  source = load_source(config)
  model = make_model(config, source.shape)
  schedule, optimizer = make_schedule(config), make_optimizer(config)
  batch = Pipeline(source, config.train.batch_size, config.seed, 0, 1).batch(0)
  return config, model, schedule, optimizer, source.shape, jnp.asarray(batch)


def test_init_state_is_a_fresh_run_of_its_seed(parts):
  _, model, schedule, optimizer, shape, _ = parts
  a = steps.init_state(model, schedule, optimizer, shape, seed=3)
  assert int(a.step) == 0
  jax.tree.map(np.testing.assert_array_equal, a.ema_params, a.params)
  jax.tree.map(np.testing.assert_array_equal, a.schedule_state, schedule.init_state())
  jax.tree.map(np.testing.assert_array_equal, a.opt_state, optimizer.init(a.params))
  b = steps.init_state(model, schedule, optimizer, shape, seed=3)
  c = steps.init_state(model, schedule, optimizer, shape, seed=4)
  jax.tree.map(np.testing.assert_array_equal, a, b)  # a pure function of the seed
  assert not np.array_equal(a.rng, c.rng)
  pairs = zip(jax.tree.leaves(a.params), jax.tree.leaves(c.params), strict=True)
  assert any(not np.array_equal(x, y) for x, y in pairs)


def test_train_step_wires_loss_optimizer_ema_and_schedule(parts):
  """One step against the same computation written out from edm.py, optax and the schedule."""
  config, model, schedule, optimizer, shape, x0_BX = parts
  state = steps.init_state(model, schedule, optimizer, shape, config.seed)
  state = state.replace(step=jnp.int32(5))  # past the lr ramp's first step
  new, metrics = jax.jit(steps.make_train_step(config, model, schedule, optimizer))(state, x0_BX)
  keys = step_keys(state)
  sigma_B, weight_B = schedule.sample(state.schedule_state, keys["sigma"], x0_BX.shape[0])
  eps_BX = jax.random.normal(keys["noise"], x0_BX.shape)
  sd = config.edm.sigma_data

  def loss_fn(params):
    net = lambda x, c: model.apply(
      {"params": params}, x, c, train=True, rngs={"dropout": keys["dropout"]}
    )
    denoised = edm.denoise(net, x0_BX + sigma_B[:, None, None, None] * eps_BX, sigma_B, sd)
    err_B = jnp.mean(jnp.square(denoised - x0_BX), axis=(1, 2, 3))
    return jnp.mean(weight_B * edm.loss_weight(sigma_B, sd) * err_B), err_B

  (loss, err_B), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
  updates, _ = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), new.params, params)
  beta = float(metrics["ema_beta"])
  ema = jax.tree.map(lambda e, p: beta * e + (1 - beta) * p, state.ema_params, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), new.ema_params, ema)
  assert float(metrics["learning_rate"]) == pytest.approx(config.optim.lr)  # ramp of 2 steps
  sched_state, _ = schedule.update(
    state.schedule_state, sigma_B, err_B, edm.loss_weight(sigma_B, sd) * err_B
  )
  for key, value in sched_state.items():
    np.testing.assert_allclose(new.schedule_state[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  assert int(new.step) == 6


def test_denoiser_is_edm_denoise_in_eval_mode(parts):
  config, model, schedule, optimizer, shape, x0_BX = parts
  state = steps.init_state(model, schedule, optimizer, shape, config.seed)
  denoise = steps.make_denoiser(config, model)
  net = lambda x, c: model.apply({"params": state.params}, x, c, train=False)
  want = edm.denoise(net, x0_BX, jnp.full((x0_BX.shape[0],), 0.7), config.edm.sigma_data)
  np.testing.assert_allclose(denoise(state.params, x0_BX, jnp.float32(0.7)), want, rtol=1e-6)


@pytest.mark.parametrize("flat", [False, True])
def test_the_grad_norm_metric_is_the_global_norm_in_either_layout(flat):
  grads = {"conv": {"kernel": jnp.arange(6.0).reshape(2, 3)}, "bias": -jnp.ones(4)}
  want = np.sqrt(sum(np.sum(np.asarray(g) ** 2) for g in jax.tree.leaves(grads)))
  assert float(steps._grad_norm(grads, flat)) == pytest.approx(want, rel=1e-6)
