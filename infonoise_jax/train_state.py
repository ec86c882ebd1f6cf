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

import itertools
import math
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
  """Adam with a linear learning-rate warm-up (EDM's ramp) and optional global-norm clipping.

  With optim.flat_update (the default) the clip and Adam act on all parameters concatenated
  into one vector (`optax.flatten`): the same arithmetic in a few large kernels instead of a
  few per parameter leaf (a U-Net has hundreds), which a launch-bound step and the compile
  both feel (BENCHMARKS.md, issue 13). Its state then holds the moments as one vector per
  run; a checkpoint of either layout restores into either (`convert_optimizer_layout`).
  """
  lr = learning_rate_schedule(config)
  # The clip stage is always present (inf = off) so the optimizer state has the same
  # structure whatever grad_clip is, and a run can resume with clipping switched.
  clip = config.optim.grad_clip if config.optim.grad_clip > 0 else float("inf")
  optimizer = optax.chain(
    optax.clip_by_global_norm(clip),
    optax.adam(lr, b1=config.optim.b1, b2=config.optim.b2, eps=config.optim.eps),
  )
  return optax.flatten(optimizer) if config.optim.flat_update else optimizer


def concat_leaves(tree, batch: tuple[int, ...] = ()) -> jax.Array:
  """All leaves of `tree` as one vector per run, in `jax.tree.leaves` order, as `optax.flatten`
  lays out the flat optimizer (`batch`: leading run axes the leaves share, kept)."""
  return jnp.concatenate([x.reshape(*batch, -1) for x in jax.tree.leaves(tree)], axis=-1)


def _is_like(params):
  """Whether a node of the optimizer state is a tree of the parameters' structure (a
  leaf-by-leaf moment, say)."""
  treedef = jax.tree.structure(params)
  return lambda x: not isinstance(x, tuple | list) and jax.tree.structure(x) == treedef


def optimizer_layout(state) -> str | None:
  """'leafwise', 'flat' or None (no moments found) for a state or an abstract state: the
  layout of its optimizer state (`make_optimizer`)."""
  is_like = _is_like(state.params)
  nodes = jax.tree.leaves(state.opt_state, is_leaf=is_like)
  if any(is_like(n) for n in nodes):
    return "leafwise"
  batch = state.step.shape
  size = sum(math.prod(p.shape[len(batch) :]) for p in jax.tree.leaves(state.params))
  if any(tuple(n.shape) == (*batch, size) for n in nodes):
    return "flat"
  return None


def convert_optimizer_layout(state, layout: str):
  """`state` (arrays or ShapeDtypeStructs) with its optimizer state in `layout`: every moment
  tree of the parameters' structure concatenated into one vector per run (flat, in
  `jax.tree.leaves` order, as `optax.flatten` does), or each such vector split back into that
  structure (leafwise). Counters and other state pass unchanged."""
  current = optimizer_layout(state)
  if layout not in ("leafwise", "flat"):
    raise ValueError(f"optimizer layout {layout!r}: leafwise or flat")
  if current is None or current == layout:
    return state
  batch = tuple(state.step.shape)  # one step counter per run: the leading run axes
  leaves, treedef = jax.tree.flatten(state.params)
  sizes = [math.prod(p.shape[len(batch) :]) for p in leaves]
  abstract = isinstance(leaves[0], jax.ShapeDtypeStruct)

  def to_flat(tree):
    if abstract:
      first = jax.tree.leaves(tree)[0]
      return jax.ShapeDtypeStruct((*batch, sum(sizes)), first.dtype, sharding=first.sharding)
    return concat_leaves(tree, batch)

  def to_leafwise(vec):
    if abstract:
      return jax.tree.unflatten(
        treedef, [jax.ShapeDtypeStruct(p.shape, vec.dtype, sharding=vec.sharding) for p in leaves]
      )
    splits = jnp.split(vec, list(itertools.accumulate(sizes))[:-1], axis=-1)
    parts = [x.reshape(p.shape) for x, p in zip(splits, leaves, strict=True)]
    return jax.tree.unflatten(treedef, parts)

  if layout == "flat":
    is_like = _is_like(state.params)
    opt_state = jax.tree.map(
      lambda n: to_flat(n) if is_like(n) else n, state.opt_state, is_leaf=is_like
    )
  else:
    flat_shape = (*batch, sum(sizes))
    opt_state = jax.tree.map(
      lambda n: to_leafwise(n) if tuple(n.shape) == flat_shape else n, state.opt_state
    )
  return state.replace(opt_state=opt_state)


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
