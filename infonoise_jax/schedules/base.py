"""The interface every training noise distribution implements.

A schedule is an immutable, hashable object holding only static settings (so it can be
closed over by `jax.jit`); everything that changes during training lives in its *state*,
a fixed-shape pytree of arrays stored inside the TrainState. All methods but `from_config`
are pure and jittable: no Python control flow on traced values, no host callbacks.

  schedule = Cls.from_config(config)          # ValueError naming the key for a bad value
  state  = schedule.init_state()
  sigma_B, lossweight_B = schedule.sample(state, key, batch_size)
  state, metrics = schedule.update(state, sigma_B, err_B, loss_B)
  pdf_G  = schedule.density(state, log_sigma_G)

`lossweight_B` multiplies the per-example EDM loss w(sigma)*err: ones for plain sampling
distributions, importance weights w/p for importance-sampling methods (VDM++), or a
learned per-sigma weight (EDM2 uncertainty). `err_B` is the unweighted
x-space error ||D - x0||^2 (mean over dims) and `loss_B` = w(sigma) * err_B. `update` is
called once per train step; a schedule that needs to know how many steps it has seen counts
them in its state. `density` is the sampling density of ln(sigma) (integrates to 1 over
ln sigma). `metrics` is a dict of scalar arrays (may be empty) logged by the trainer.

Optional capability, `HasProfile`: `profile(state) -> (log_sigma_K, rate_K)`, a learned
information profile (the InfoGrid sampler grids and the schedule plot use it).
The dataclass defaults of every schedule equal `configs/default.py`'s values.
"""

import math
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import ml_collections

Array = jax.Array
State = Any  # a pytree of arrays with fixed shapes


@runtime_checkable
class Schedule(Protocol):
  """Training noise distribution over sigma (see module docstring)."""

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Schedule": ...

  def init_state(self) -> State: ...

  def sample(self, state: State, key: Array, batch_size: int) -> tuple[Array, Array]: ...

  def update(
    self, state: State, sigma_B: Array, err_B: Array, loss_B: Array
  ) -> tuple[State, dict[str, Array]]: ...

  def density(self, state: State, log_sigma_G: Array) -> Array: ...


@runtime_checkable
class HasProfile(Protocol):
  """A schedule that learns an information profile (optional capability)."""

  def profile(self, state: State) -> tuple[Array, Array]:
    """(log_sigma_K, rate_K): entropy rate per unit ln sigma at bin centres, unit mass."""
    ...


@runtime_checkable
class HasLossWeights(Protocol):
  """A schedule whose `sample` returns loss weights other than 1 (optional capability)."""

  def loss_weights(self, state: State, log_sigma_G: Array) -> Array:
    """The weight `sample` returns with a draw at each ln sigma (a function of sigma alone)."""
    ...


def weighted_density(schedule: Schedule, state: State, log_sigma_G: Array) -> Array:
  """pi(l) times the schedule's own loss weight at l: the density of the training objective's
  noise levels. Times EDM's w(sigma) it is the effective allocation phi = pi * lambda * w that
  the gradient sees (docs/schedules.md). For VDM++ and iDDPM (weights base / pi) it is the base
  law whatever pi adapted to; for EDM2 it is the log-normal times exp(-u(sigma))."""
  density_G = schedule.density(state, log_sigma_G)
  if isinstance(schedule, HasLossWeights):
    return density_G * schedule.loss_weights(state, log_sigma_G)
  return density_G


class StatelessSchedule:
  """Mixin for fixed distributions: empty state, no-op update, unit loss weights."""

  def init_state(self) -> State:
    return {}

  def update(self, state, sigma_B, err_B, loss_B):
    del sigma_B, err_B, loss_B
    return state, {}

  def sample(self, state, key, batch_size):
    del state
    sigma_B = self.sample_sigma(key, batch_size)
    return sigma_B, jnp.ones_like(sigma_B)

  def sample_sigma(self, key: Array, batch_size: int) -> Array:
    raise NotImplementedError


def positive(value: float, key: str) -> float:
  """`value` as a float; ValueError naming the config `key` unless it is finite and > 0 (an
  infinite width or learning rate passes > 0 and only turns the first steps NaN)."""
  if not (value > 0 and math.isfinite(value)):
    raise ValueError(f"{key} must be finite and > 0, got {value!r}")
  return float(value)


def finite(value: float, key: str) -> float:
  """`value` as a float; ValueError naming the config `key` unless it is finite."""
  if not math.isfinite(value):
    raise ValueError(f"{key} must be finite, got {value!r}")
  return float(value)
