"""The Sampler: draws samples of a trained model (its EMA parameters) on a device mesh.

Built from explicit parts (config, model, schedule, mesh, example shape) by whoever owns
them: the trainer (sample grids, periodic FID), the sample and evaluate commands (from a
restored run). Sample j of seed s starts from the key fold_in(key(s), j) (initial noise and
any churn noise), so it does not depend on the batch size, the device count or how many
samples are drawn. Samples are drawn in fixed-size batches sharded over the mesh's `data`
axis (one compile per batch size) and come back as numpy, in model units, on every host.
"""

import dataclasses
import math
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from infonoise_jax import solvers, steps
from infonoise_jax.data.sources import DATA_LOCATION_KEYS, data_location_items
from infonoise_jax.schedules import Schedule
from infonoise_jax.validation import apply_overrides


def sampler_config(
  config: ml_collections.ConfigDict,
  grid: str | None = None,
  num_steps: int | None = None,
  method: str | None = None,
  overrides: Sequence[str] = (),
) -> ml_collections.ConfigDict:
  """A copy of `config` with sampler.grid / num_steps / name overridden where given, then the
  `--set sampler.key=value` items of `overrides` (e.g. sampler.s_churn=40 for EDM's stochastic
  sampler); items that say where the run's data now lies (DATA_LOCATION_KEYS) are allowed and
  left to `restore.load_config`, any other key is an error. The Sampler draws with its own
  config's settings, so build it from this copy."""
  config = config.copy_and_resolve_references()
  flags = {
    "sampler.grid": ("--grid", grid),
    "sampler.num_steps": ("--steps", num_steps),
    "sampler.name": ("--method", method),
  }
  for item in overrides:
    key = item.split("=", 1)[0].strip()
    flag, value = flags.get(key, ("", None))
    if value is not None:
      raise ValueError(
        f"--set {item} and {flag}={value} both set {key}: give one of them ({flag} is the "
        "same setting)"
      )
  if grid is not None:
    config.sampler.grid = grid
  if num_steps is not None:
    config.sampler.num_steps = int(num_steps)
  if method is not None:
    config.sampler.name = method
  moved = data_location_items(overrides)
  other = [o for o in overrides if not o.startswith("sampler.") and o not in moved]
  if other:
    raise ValueError(
      f"--set {other[0]}: the sample and evaluate commands change sampler.* keys (e.g. --set "
      f"sampler.s_churn=40) and where the run's data now lies ({', '.join(DATA_LOCATION_KEYS)});"
      " evaluate on token runs also seq_metrics.* (the domain metrics' settings); the rest of a "
      "run's config is its own"
    )
  apply_overrides(config, [o for o in overrides if o not in moved])
  return config


@dataclasses.dataclass(frozen=True, eq=False)
class Sampler:
  """What drawing from a trained model needs (hashable by identity, for the jit cache)."""

  config: ml_collections.ConfigDict
  model: nn.Module
  schedule: Schedule
  mesh: jax.sharding.Mesh
  data_shape: tuple[int, ...]  # one example: (H, W, C) or (D,)
  _draw_fns: dict = dataclasses.field(default_factory=dict, init=False, repr=False)  # per batch

  @property
  def is_image(self) -> bool:
    return len(self.data_shape) == 3

  @property
  def data_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P("data"))

  def sigmas(self, schedule_state, config: ml_collections.ConfigDict | None = None) -> jax.Array:
    """The sigma grid of `config.sampler` (default the run's); InfoGrid uses the learned profile."""
    config = self.config if config is None else config
    if not config.sampler.grid.startswith("infogrid"):
      return solvers.make_sigmas(config)
    solvers.check_grid(self.config, config.sampler.grid)
    return solvers.make_sigmas(config, profile=self.schedule.profile(schedule_state))

  def warn_if_profile_unlearned(self, schedule_state, step: int) -> None:
    """InfoGrid on a checkpoint whose InfoNoise profile was never estimated (0 refreshes: the
    run stopped inside the warm-up) follows the estimator's initial profile (m = 1, so
    q = 1 / sigma^2 under the gate), not the data's."""
    refreshes = schedule_state.get("refreshes") if isinstance(schedule_state, dict) else None
    if self.config.sampler.grid.startswith("infogrid") and refreshes is not None:
      if int(np.max(np.asarray(refreshes))) == 0:
        warmup = self.config.schedule.infonoise.warmup_steps
        logging.warning(
          "sampler.grid=%s: the checkpoint of step %d has no learned profile (the first "
          "refresh comes after schedule.infonoise.warmup_steps=%d), so this grid follows the "
          "estimator's initial profile (1 / sigma^2 under the gate), not the data's; use a "
          "later checkpoint or --grid=karras",
          self.config.sampler.grid, step, warmup,
        )  # fmt: skip

  def round_batch(self, num: int, batch: int | None = None) -> int:
    """Batch per call: `batch` (default fid.batch_size), at most `num`, a multiple of devices."""
    batch = self.config.fid.batch_size if batch is None else batch
    n_dev = self.mesh.devices.size
    return math.ceil(max(1, min(batch, num)) / n_dev) * n_dev

  def draw_fn(self, batch: int):
    """Jitted (params, seed_key, start, sigmas) -> samples start .. start+batch-1, sharded."""
    if batch not in self._draw_fns:
      self._draw_fns[batch] = jax.jit(self._draw(batch), out_shardings=self.data_sharding)
    return self._draw_fns[batch]

  def _draw(self, batch: int):
    s, shape = self.config.sampler, self.data_shape
    denoise = steps.make_denoiser(self.config, self.model)
    settings = dict(s_churn=s.s_churn, s_tmin=s.s_tmin, s_tmax=s.s_tmax, s_noise=s.s_noise)

    def draw(params, seed_key, start, sigmas):
      idx_B = jax.lax.with_sharding_constraint(start + jnp.arange(batch), self.data_sharding)
      keys_B = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(seed_key, idx_B)

      def one(key):  # one sample, its own key: independent of batch and layout
        fn = lambda x, sigma: denoise(params, x, sigma)
        return solvers.sample(fn, key, (1, *shape), sigmas, method=s.name, **settings)[0]

      return jax.vmap(one)(keys_B)

    return draw

  def draw(
    self, params, sigmas: jax.Array, num: int, seed: int, batch: int | None = None
  ) -> Iterator[np.ndarray]:
    """Yields samples 0..num-1 of seed `seed` in batches, as numpy on every host (model units)."""
    batch = self.round_batch(num, batch)
    fn, key = self.draw_fn(batch), jax.random.key(seed)
    # The next batch is dispatched before this one is fetched and handed over, so the device
    # generates it while the host copies this one and the caller works on it (e.g. Inception).
    pending = fn(params, key, 0, sigmas)
    for start in range(0, num, batch):
      x = pending
      if start + batch < num:
        pending = fn(params, key, start + batch, sigmas)
      yield np.asarray(multihost_utils.process_allgather(x, tiled=True))[: num - start]

  def draw_all(
    self, params, sigmas: jax.Array, num: int, seed: int, batch: int | None = None
  ) -> np.ndarray:
    return np.concatenate(list(self.draw(params, sigmas, num, seed, batch)), axis=0)

  def draw_ema(self, state, num: int, seed: int) -> np.ndarray:
    """`num` samples of the state's EMA model on the run's own sampler settings."""
    return self.draw_all(state.ema_params, self.sigmas(state.schedule_state), num, seed)
