"""Pure step functions: state init, the train step and the EMA-model sampler.

`train_step(state, batch_BX) -> (state, metrics)` is the whole training update: draw
sigma_B from the schedule, noise the batch, evaluate the preconditioned denoiser, take
per-example losses (docs/method.md section 2), apply Adam, update the EMA, and update the
schedule's state from the unweighted errors -- all inside one jitted function, so
InfoNoise's record and refresh run on device with no host round-trip. Under `jax.jit`
with the batch sharded over the data axis, every mean and segment sum below is a
reduction over the *global* batch.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from infonoise_jax import edm, log_sigma
from infonoise_jax.schedules.base import Schedule
from infonoise_jax.train_state import (
  TrainState,
  concat_leaves,
  ema_decay,
  learning_rate_schedule,
  step_keys,
)


def init_state(
  model: nn.Module,
  schedule: Schedule,
  optimizer: optax.GradientTransformation,
  data_shape: tuple[int, ...],
  seed: int,
) -> TrainState:
  """Builds the initial TrainState (pure; jit it with out_shardings to place it)."""
  root = jax.random.key(seed)
  init_key, run_key = jax.random.split(root)
  x = jnp.zeros((1, *data_shape), jnp.float32)
  params = model.init({"params": init_key}, x, jnp.zeros((1,)), train=False)["params"]
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    ema_params=jax.tree.map(jnp.copy, params),
    opt_state=optimizer.init(params),
    schedule_state=schedule.init_state(),
    rng=jax.random.key_data(run_key),
  )


def _grad_norm(grads, flat: bool) -> jax.Array:
  """The gradients' global norm, a metric. With the flat optimizer (optim.flat_update) it is
  taken over the vector the optimizer concatenates, built the same way (`concat_leaves`), so
  XLA computes one reduction (or shares it) instead of one per parameter leaf: 2,919 -> 2,325
  kernels in the 64-channel Fashion step compiled for the CPU (BENCHMARKS.md, issue 13)."""
  return optax.tree.norm(concat_leaves(grads) if flat else grads)


def make_train_step(
  config: ml_collections.ConfigDict,
  model: nn.Module,
  schedule: Schedule,
  optimizer: optax.GradientTransformation,
) -> Callable[[TrainState, jax.Array], tuple[TrainState, dict[str, Any]]]:
  """Returns the pure train step closed over the static model, schedule and optimizer."""
  sigma_data = config.edm.sigma_data
  lr_schedule = learning_rate_schedule(config)  # the optimizer's own schedule, for logging
  loss_grid = log_sigma.LogSigmaGrid.from_config(config, config.train.profile_bins)

  def train_step(state: TrainState, x0_BX: jax.Array) -> tuple[TrainState, dict[str, Any]]:
    keys = step_keys(state)
    batch = x0_BX.shape[0]
    sigma_B, lossweight_B = schedule.sample(state.schedule_state, keys["sigma"], batch)
    eps_BX = jax.random.normal(keys["noise"], x0_BX.shape, x0_BX.dtype)
    x_noisy_BX = edm.add_noise(x0_BX, sigma_B, eps_BX)

    def loss_fn(params):
      def net_fn(x_in, c_noise):
        return model.apply(
          {"params": params}, x_in, c_noise, train=True, rngs={"dropout": keys["dropout"]}
        )

      denoised_BX = edm.denoise(net_fn, x_noisy_BX, sigma_B, sigma_data)
      err_B = edm.per_example_error(denoised_BX, x0_BX)
      loss_B = edm.loss_weight(sigma_B, sigma_data) * err_B
      return jnp.mean(lossweight_B * loss_B), (err_B, loss_B)

    (loss, (err_B, loss_B)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    beta = ema_decay(config, state.step)
    ema_params = optax.incremental_update(params, state.ema_params, step_size=1.0 - beta)
    schedule_state, schedule_metrics = schedule.update(
      state.schedule_state,
      sigma_B,
      err_B,
      loss_B,
    )
    # Per-noise-level loss sums and counts (TensorBoard's loss_by_log_sigma).
    bin_loss_P, bin_count_P = loss_grid.record(jnp.log(sigma_B), loss_B)
    metrics = {
      "loss": loss,
      "loss_edm": jnp.mean(loss_B),  # w(sigma)*err without the schedule's loss weights
      "err_x": jnp.mean(err_B),  # unweighted x-space error (InfoNoise's input)
      "grad_norm": _grad_norm(grads, config.optim.flat_update),
      "learning_rate": lr_schedule(state.step),
      "ema_beta": beta,
      "bin_loss_sum": bin_loss_P,
      "bin_count": bin_count_P,
      **schedule_metrics,
    }
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      ema_params=ema_params,
      opt_state=opt_state,
      schedule_state=schedule_state,
    )
    return new_state, metrics

  return train_step


def make_denoiser(
  config: ml_collections.ConfigDict, model: nn.Module
) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
  """D(params, x_B, sigma_B): the preconditioned denoiser in eval mode (no dropout)."""

  def denoise(params, x_BX, sigma_B):
    sigma_B = jnp.broadcast_to(sigma_B, x_BX.shape[:1])
    net_fn = lambda x_in, c_noise: model.apply({"params": params}, x_in, c_noise, train=False)
    return edm.denoise(net_fn, x_BX, sigma_B, config.edm.sigma_data)

  return denoise
