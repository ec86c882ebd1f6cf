"""Training-loop metrics on the host and device: window aggregation, progress, NaN/Inf guard.

* `window_metrics` turns one train step's metrics into `clu.metrics` objects, merged over a
  log window on device: per-step values (loss, grad norm) are `Average`s, readouts of the
  state (learning rate, EMA beta, the schedule's `<name>/<key>` readouts) `LastValue`s, the
  per-noise-bin losses a `BinnedAverage` and the ln-sigma histogram a `BinCounts` (so the
  sigmas of a batch are counted into bins on device, never gathered).
* `ProgressReporter` turns (step, wall time) into steps/s, images/s and time left;
  `format_progress` makes the one console line per log window.
* `DelayedFetcher` fetches a log window's device metrics one window late, so the host never
  waits on the device (STYLE.md idiom 8).
* `check_finite` aborts with `NonFiniteError`, naming the metric and the step range.
* The TensorBoard writers are in `writers.py` (`create_writer` is re-exported here).
"""

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics

from infonoise_jax.writers import MetricWriter, create_writer  # noqa: F401 - re-exported

# ------------------------------------------------------------------------------ window metrics

AVERAGED = ("loss", "loss_edm", "err_x", "grad_norm")  # per-step values: mean over the window
BINNED_LOSS = "loss_by_log_sigma"  # per-noise-bin mean loss, (profile_bins,)
SIGMA_COUNTS = "log_sigma_counts"  # sigmas drawn per ln-sigma bin, (profile_bins,)


@flax.struct.dataclass
class BinnedAverage(clu_metrics.Metric):
  """Per-bin mean over a window: sums and counts per bin; empty bins compute to NaN."""

  total_P: jax.Array
  count_P: jax.Array

  @classmethod
  def from_model_output(cls, total_P, count_P, **_) -> "BinnedAverage":
    return cls(jnp.asarray(total_P, jnp.float32), jnp.asarray(count_P, jnp.float32))

  def merge(self, other: "BinnedAverage") -> "BinnedAverage":
    return type(self)(self.total_P + other.total_P, self.count_P + other.count_P)

  def compute(self) -> jax.Array:
    return jnp.where(self.count_P > 0, self.total_P / jnp.maximum(self.count_P, 1), jnp.nan)


@flax.struct.dataclass
class BinCounts(clu_metrics.Metric):
  """Counts per bin, summed over a window (a histogram made on device)."""

  count_P: jax.Array

  @classmethod
  def from_model_output(cls, count_P, **_) -> "BinCounts":
    return cls(jnp.asarray(count_P, jnp.float32))

  def merge(self, other: "BinCounts") -> "BinCounts":
    return type(self)(self.count_P + other.count_P)

  def compute(self) -> jax.Array:
    return self.count_P


def window_metrics(step_metrics: Mapping[str, jax.Array]) -> dict[str, clu_metrics.Metric]:
  """One step's metrics (steps.train_step) as clu metrics; merge with `merge_windows`."""
  out = {
    BINNED_LOSS: BinnedAverage.from_model_output(
      step_metrics["bin_loss_sum"], step_metrics["bin_count"]
    ),
    SIGMA_COUNTS: BinCounts.from_model_output(step_metrics["bin_count"]),
  }
  for name, value in step_metrics.items():
    if name in ("bin_loss_sum", "bin_count"):
      continue
    kind = clu_metrics.Average if name in AVERAGED else clu_metrics.LastValue
    out[name] = kind.from_model_output(jnp.asarray(value, jnp.float32))
  return out


@jax.jit
def accumulate(window: dict | None, step_metrics: Mapping[str, jax.Array]) -> dict:
  """`window` merged with one step's metrics (a new window if `window` is None), on device."""
  new = window_metrics(step_metrics)
  return new if window is None else {k: window[k].merge(new[k]) for k in window}


@jax.jit
def compute_window(window: dict) -> dict[str, jax.Array]:
  return {k: m.compute() for k, m in window.items()}


def histogram_values(edges_E: np.ndarray, counts_P: np.ndarray) -> np.ndarray:
  """Bin centres repeated by their counts: a histogram counted on device, as values that any
  MetricWriter's `write_histograms` takes (with `num_buckets` = the number of bins)."""
  centres_P = 0.5 * (edges_E[1:] + edges_E[:-1])
  return np.repeat(centres_P, np.rint(np.asarray(counts_P)).astype(np.int64))


# ------------------------------------------------------------------------------ progress


class ProgressReporter:
  """Throughput of each log window: steps/s, images/s and time left.

  Call it after each step (or at least at every multiple of `every`). The first call only
  starts the clock; later calls at multiples of `every` measure the window since the last
  one and return the numbers (scalars for the writer), else None. Rates are per window, so
  the first window includes compilation; time left uses the latest window's rate.
  """

  def __init__(
    self,
    num_steps: int,
    batch_size: int,
    every: int,
    *,
    time_fn: Callable[[], float] = time.monotonic,
  ):
    self.num_steps, self.batch_size, self.every = num_steps, batch_size, every
    self._time_fn = time_fn
    self._last: tuple[int, float] | None = None

  def __call__(self, step: int) -> dict[str, float] | None:
    now = self._time_fn()
    if self._last is None:
      self._last = (step, now)
      return None
    if (step % self.every and step != self.num_steps) or step <= self._last[0]:
      return None
    last_step, last_time = self._last
    self._last = (step, now)
    steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
    return {
      "perf/steps_per_sec": steps_per_sec,
      "perf/images_per_sec": steps_per_sec * self.batch_size,
      "perf/eta_seconds": max(self.num_steps - step, 0) / steps_per_sec,
    }


def format_progress(step: int, num_steps: int, scalars: Mapping[str, float]) -> str:
  """The console line of one log window (about 90 characters), e.g.
  `step 1200/4000 | loss 0.0412 | grad 0.31 | lr 1.00e-03 | 5,120 img/s | ETA 3m05s`."""
  parts = [f"step {step}/{num_steps}"]
  for key, label, fmt in (
    ("loss", "loss", ".4g"),
    ("grad_norm", "grad", ".3g"),
    ("learning_rate", "lr", ".2e"),
    ("perf/images_per_sec", "img/s", ",.0f"),
  ):
    if key in scalars:
      value = format(scalars[key], fmt)
      parts.append(f"{value} {label}" if label == "img/s" else f"{label} {value}")
  if "perf/eta_seconds" in scalars:
    parts.append(f"ETA {format_duration(scalars['perf/eta_seconds'])}")
  return " | ".join(parts)


def format_duration(seconds: float) -> str:
  """'1h02m03s', '4m05s' or '7s'."""
  s = int(round(seconds))
  h, m, s = s // 3600, s // 60 % 60, s % 60
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


# ------------------------------------------------------------------------------ late fetch


@dataclasses.dataclass(frozen=True)
class FetchedWindow:
  """Host metrics of the log window covering steps (start_step, end_step]."""

  start_step: int
  end_step: int
  metrics: dict[str, Any]  # float for scalars, np.ndarray otherwise


class DelayedFetcher:
  """Fetches each log window's device metrics one window late.

  At the end of window k the loop calls `push(step, metrics)` with that window's metrics as
  device arrays (still being computed: dispatch is asynchronous). `push` starts their
  device-to-host copy without waiting and returns window k-1's metrics as host values. By
  then the device has finished window k-1 and is busy with queued steps of window k, so the
  conversion never stalls it. `flush()` fetches the pending window now (blocking): call it
  after the loop, and at checkpoint steps (a multiple of the log period) before saving, so
  a non-finite state is never saved:

    fetcher = DelayedFetcher(start_step)
    for step in range(start_step + 1, num_steps + 1):
      state, window_metrics = train_step(state, batch)  # window_metrics: device arrays
      windows = []
      if step % log_every == 0:
        windows.append(fetcher.push(step, window_metrics))  # window k-1, on host
      if step % checkpoint_every == 0 or step == num_steps:
        windows.append(fetcher.flush())  # window k, blocking, before saving
      for w in filter(None, windows):
        check_finite(w.metrics, (w.start_step, w.end_step), last_checkpoint_path)
        writer.write_scalars(w.end_step, w.metrics)
  """

  def __init__(self, start_step: int = 0):
    self._last_end = start_step
    self._pending: tuple[int, int, Any] | None = None

  def push(self, step: int, metrics: Any) -> FetchedWindow | None:
    for leaf in jax.tree.leaves(metrics):
      if hasattr(leaf, "copy_to_host_async"):
        leaf.copy_to_host_async()
    previous = self._pending
    self._pending = (self._last_end, step, metrics)
    self._last_end = step
    return None if previous is None else _to_host(*previous)

  def flush(self) -> FetchedWindow | None:
    previous, self._pending = self._pending, None
    return None if previous is None else _to_host(*previous)


def _to_host(start_step: int, end_step: int, metrics: Any) -> FetchedWindow:
  host = {
    jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(leaf)
    for path, leaf in jax.tree.leaves_with_path(jax.device_get(metrics))
  }
  host = {k: float(v.item()) if v.size == 1 else v for k, v in host.items()}
  return FetchedWindow(start_step, end_step, host)


# ------------------------------------------------------------------------------ finite guard


class NonFiniteError(FloatingPointError):
  """A logged metric became NaN or Inf; `.metrics` names them, `.step_range` says when."""

  def __init__(self, message: str, metrics: dict[str, str], step_range: tuple[int, int]):
    super().__init__(message)
    self.metrics, self.step_range = metrics, step_range


def check_finite(
  metrics_host: Mapping[str, Any],
  step_range: tuple[int, int],
  checkpoint_path: str | None = None,
) -> None:
  """Raises NonFiniteError if any numeric metric (scalar or array) holds NaN or +-Inf.

  `step_range` = (last step known good, step of this measurement); `checkpoint_path` is the
  last checkpoint saved before the problem (None: none saved yet).
  """
  bad = {}
  for name, value in sorted(metrics_host.items()):
    v = np.asarray(value)
    if not np.issubdtype(v.dtype, np.number) or np.all(np.isfinite(v)):
      continue
    bad[name] = "NaN" if np.any(np.isnan(v)) else "Inf"
  if not bad:
    return
  what = ", ".join(f"{name} became {kind}" for name, kind in bad.items())
  where = (
    f"last good checkpoint is kept at {checkpoint_path}"
    if checkpoint_path
    else "no checkpoint was saved before it"
  )
  raise NonFiniteError(
    f"{what} between steps {step_range[0]} and {step_range[1]}; {where}", bad, step_range
  )
