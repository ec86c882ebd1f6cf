"""The one train-state pytree and the optimizer / EMA rules that act on it.

Everything that a resumed run needs lives here, so it is sharded, donated, checkpointed
and restored as one object: the step counter, the network parameters, their EMA, the
optimizer state, the noise schedule's state (InfoNoise's bin sums, EMA'd profile and CDF
table) and the PRNG key. The data position needs no entry: the pipeline is a pure
function of (seed, step).

The key is stored as raw uint32 key data (`jax.random.key_data`) rather than a typed
key array so that every leaf is a plain numeric array that Orbax saves on any backend;
`step_keys` wraps it back into a typed key before use.
"""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any  # network parameters (float32)
  ema_params: Any  # EMA of params, used for sampling and evaluation
  opt_state: Any  # optax state
  schedule_state: Any  # noise schedule state (see schedules/base.py)
  rng: jax.Array  # uint32 key data of the run's root PRNG key


def abstract_state(init_fn: Callable[[], TrainState], sharding) -> TrainState:
  """Shapes, dtypes and `sharding` (one for every leaf) of `init_fn()`, without running it:
  the restore target, so a resumed run allocates its state once."""
  return jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), jax.eval_shape(init_fn)
  )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with a linear learning-rate warm-up (EDM's ramp) and optional global-norm clipping."""
  lr = learning_rate_schedule(config)
  # The clip stage is always present (inf = off) so the optimizer state has the same
  # structure whatever grad_clip is, and a run can resume with clipping switched.
  clip = config.optim.grad_clip if config.optim.grad_clip > 0 else float("inf")
  return optax.chain(
    optax.clip_by_global_norm(clip),
    optax.adam(lr, b1=config.optim.b1, b2=config.optim.b2, eps=config.optim.eps),
  )


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning rate against the optimizer step: EDM's linear ramp to optim.lr, then constant."""
  return optax.linear_schedule(0.0, config.optim.lr, max(int(config.optim.warmup_steps), 1))


def ema_decay(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
  """EDM's EMA: half-life in images, capped at a fraction of the images seen so far.

  beta = 0.5 ** (batch / min(halflife_img, ratio * images_seen)).
  """
  batch = config.train.batch_size
  halflife = config.optim.ema_halflife_kimg * 1000.0
  seen = (step.astype(jnp.float32) + 1.0) * batch
  if config.optim.ema_warmup_ratio > 0:
    halflife = jnp.minimum(halflife, seen * config.optim.ema_warmup_ratio)
  return 0.5 ** (batch / jnp.maximum(halflife, 1e-8))


def step_keys(state: TrainState) -> dict[str, jax.Array]:
  """Per-step keys, one per purpose: fold the step into the root key, then split."""
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  sigma_key, noise_key, dropout_key = jax.random.split(key, 3)
  return {"sigma": sigma_key, "noise": noise_key, "dropout": dropout_key}
