"""Several seeds of one recipe trained side by side: the train step vmapped over a run axis.

A small network leaves an accelerator idle at one run's batch. Runs that share everything
static (network, schedule settings, optimizer, batch size) and differ only in their seed share
one compiled step: every leaf of the TrainState gains a leading run axis R, the data batch is
(R, B, ...), and `jax.vmap(train_step)` is jitted once. Runs stay independent: each has its own
seed (init, data order, sigma and noise draws) and its own schedule state, so the result of run
r is the result of `train.Run` with that seed, up to floating-point reassociation.

Arms that differ in schedule or any other static setting compile different steps; those run
one after another or in separate processes (experiments/compare_schedules.py,
experiments/benchmarks/parallel_runs_bench.py measures the options).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from infonoise_jax import steps
from infonoise_jax.data import Pipeline, load_source, resolve_sigma_data
from infonoise_jax.mesh import make_mesh
from infonoise_jax.model_sampler import Sampler
from infonoise_jax.models import make_model
from infonoise_jax.schedules import make_schedule
from infonoise_jax.train_state import TrainState, make_optimizer
from infonoise_jax.validation import validate_config


class MultiRun:
  """Runs `seeds` of one config in one jitted, vmapped step (single process).

  Works on its own copy of `config`: `self.config` holds what the data resolves (token data's
  edm.sigma_data = 0 becomes the encoding's std), while the caller's config stays as given,
  so a hash of it names the command's settings whatever the data resolved.
  """

  def __init__(self, config: ml_collections.ConfigDict, seeds: list[int], source=None):
    if not seeds or len(set(seeds)) != len(seeds):
      raise ValueError(f"seeds must be distinct and non-empty; got {seeds}")
    config = config.copy_and_resolve_references()
    validate_config(config, 1)
    self.config = config
    self.seeds = [int(s) for s in seeds]
    self.source = load_source(config) if source is None else source
    resolve_sigma_data(config, self.source.encoding)  # tokens: sigma_data 0 -> one-hot std
    self.model = make_model(config, self.source.shape)
    self.schedule = make_schedule(config)
    self.optimizer = make_optimizer(config)
    self.pipelines = [
      Pipeline(self.source, config.train.batch_size, s, random_flip=config.data.random_flip)
      for s in self.seeds
    ]
    step = steps.make_train_step(config, self.model, self.schedule, self.optimizer)

    def train_step(state, x0_RBX, bad_R):
      state, metrics = jax.vmap(step)(state, x0_RBX)
      watched = {k: metrics[k] for k in IntervalStats.KEYS}
      return state, bad_R | ~jnp.isfinite(metrics["loss"]), watched

    self.train_step = jax.jit(train_step, donate_argnums=(0, 2))
    init = lambda seed: steps.init_state(
      self.model, self.schedule, self.optimizer, self.source.shape, seed
    )
    self._init = jax.jit(jax.vmap(init))
    mesh = make_mesh(jax.devices()[:1])  # training is single-device too
    self.sampler = Sampler(config, self.model, self.schedule, mesh, self.source.shape)

  @property
  def num_runs(self) -> int:
    return len(self.seeds)

  def init(self) -> tuple[TrainState, jax.Array]:
    """The stacked initial states and a per-run 'non-finite loss seen' flag."""
    return self._init(jnp.asarray(self.seeds, jnp.int32)), jnp.zeros((self.num_runs,), bool)

  def batch(self, step: int) -> np.ndarray:
    """(R, B, ...) batch of every run for 0-based `step`."""
    return np.stack([p.batch(step) for p in self.pipelines])

  def run_state(self, state: TrainState, r: int) -> TrainState:
    """Run r's TrainState (no run axis)."""
    return jax.tree.map(lambda a: a[r], state)

  def samples(self, state: TrainState, r: int, num: int, seed: int) -> np.ndarray:
    """`num` samples of run r's EMA model with the config's sampler (model units)."""
    return self.sampler.draw_ema(self.run_state(state, r), num, seed)


class IntervalStats:
  """Each run's training loss and gradient norm over the steps since the last `read`: their
  means and the largest gradient norm, summed on the device step by step (one small program
  per step, no host round-trip) and fetched only when read, e.g. at an evaluation."""

  KEYS = ("loss", "grad_norm")  # of the step's metrics; MultiRun.train_step returns these

  def __init__(self):
    self._acc, self._steps = None, 0  # the step count is the host's: one add per step

    def add(acc, m):
      return {
        "loss": acc["loss"] + m["loss"],
        "grad_norm": acc["grad_norm"] + m["grad_norm"],
        "grad_norm_max": jnp.maximum(acc["grad_norm_max"], m["grad_norm"]),
      }

    self._add = jax.jit(add, donate_argnums=0)

  def add(self, watched_R: dict) -> None:
    """Adds one step's (R,) `loss` and `grad_norm` (the third output of MultiRun.train_step)."""
    if self._acc is None:
      zero = lambda: jnp.zeros_like(watched_R["loss"], dtype=jnp.float32)  # one buffer each
      self._acc = {k: zero() for k in ("loss", "grad_norm", "grad_norm_max")}
    self._acc = self._add(self._acc, watched_R)
    self._steps += 1

  def read(self) -> list[dict]:
    """Per run: {train_loss, grad_norm_mean, grad_norm_max, train_steps} over the steps added
    since the last read (empty when none was); starts a new interval."""
    if self._acc is None:
      return []
    a, n = jax.tree.map(np.asarray, self._acc), self._steps
    self._acc, self._steps = None, 0
    return [
      {
        "train_loss": float(loss / n),
        "grad_norm_mean": float(norm / n),
        "grad_norm_max": float(top),
        "train_steps": n,
      }
      for loss, norm, top in zip(a["loss"], a["grad_norm"], a["grad_norm_max"], strict=True)
    ]


def check_finite(bad_R: jax.Array, seeds: list[int], step_range: tuple[int, int]) -> None:
  """Stops loudly when any run saw a non-finite loss in `step_range`."""
  bad = np.asarray(bad_R)
  if bad.any():
    which = [s for s, b in zip(seeds, bad, strict=True) if b]
    raise FloatingPointError(
      f"non-finite loss in steps {step_range[0]}..{step_range[1]} for seeds {which}"
    )
