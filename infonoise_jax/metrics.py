"""Training-loop metrics on the host and device: window aggregation, progress, NaN/Inf guard.

* `window_metrics` turns one train step's metrics into `clu.metrics` objects, merged over a
  log window on device: per-step values (loss, grad norm) are `Average`s, readouts of the
  state (learning rate, EMA beta, the schedule's `<name>/<key>` readouts) `LastValue`s, the
  per-noise-bin losses a `BinnedAverage` and the ln-sigma histogram a `BinCounts` (so the
  sigmas of a batch are counted into bins on device, never gathered).
* `ProgressReporter` turns (step, the time the device finished it) into steps/s, images/s,
  time left and MFU, leaving out time spent on sample grids and evaluations;
  `format_progress` makes the one console line per log window.
* `DelayedFetcher` fetches a log window's device metrics one window late, so the host never
  waits on the device (STYLE.md idiom 8).
* `check_finite` aborts with `NonFiniteError`, naming the metric and the step range.
* The TensorBoard writers are in `writers.py` (`create_writer` is re-exported here).
"""

import contextlib
import dataclasses
import queue
import threading
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
  """Training throughput of each log window: steps/s, images/s, time left (and MFU).

  A window's time runs from the moment the device finished the previous window's last step
  to the moment it finished this window's last step, less the time spent on work that is
  not training (sample grids, FID, evaluations: `excluded()`), which is reported apart as
  `perf/excluded_seconds`. Finish times are taken by a watcher thread that waits on arrays
  the window's last step computed (`mark`), so the host never waits for them; reading the
  host clock when the last step was *dispatched* instead made windows swing with how far
  ahead of the device the host happened to be.

    progress = ProgressReporter(num_steps, batch_size)
    progress.start(step, state)          # after the first (compiled) step has finished
    ...each log window: progress.mark(step, window_metrics)
    ...one window later: scalars = progress.report(step)
    with progress.excluded(state): draw_sample_grid()

  `time_fn` is injectable for tests; with `ready=None` a mark is taken at once.
  """

  def __init__(
    self,
    num_steps: int,
    batch_size: int,
    *,
    flops_per_step: float = 0.0,
    peak_flops: float | None = None,
    time_fn: Callable[[], float] = time.monotonic,
  ):
    self.num_steps, self.batch_size = num_steps, batch_size
    self.flops_per_step, self.peak_flops = flops_per_step, peak_flops  # peak: all devices
    self._time_fn = time_fn
    self._done: dict[int, float] = {}  # step -> when the device finished it
    self._excluded: dict[int, float] = {}  # window end step -> seconds not training
    self._open_excluded = 0.0  # excluded seconds of the window not yet marked
    self._last: int | None = None  # the latest reported (or starting) step
    self.started = False
    self._cv = threading.Condition()
    self._queue: queue.Queue = queue.Queue()
    self._thread: threading.Thread | None = None
    self.totals = {"steps": 0, "seconds": 0.0, "excluded_seconds": 0.0}

  def _stamp(self, step: int, ready: Any) -> None:
    if ready is None:
      with self._cv:
        self._done[step] = self._time_fn()
        self._cv.notify_all()
      return
    if self._thread is None:
      self._thread = threading.Thread(target=self._watch, name="progress-clock", daemon=True)
      self._thread.start()
    self._queue.put((step, ready))

  def _watch(self) -> None:
    while (item := self._queue.get()) is not None:
      step, ready = item
      try:
        jax.block_until_ready(ready)
      except Exception:  # noqa: BLE001 - a failed step is reported by the loop, not here
        pass
      with self._cv:
        self._done[step] = self._time_fn()
        self._cv.notify_all()

  def start(self, step: int, ready: Any = None) -> None:
    """Starts the clock when `ready` is computed (now if None): the first window's rate
    leaves out what came before, such as compiling the step."""
    self._last, self.started = step, True
    self._stamp(step, ready)

  def mark(self, step: int, ready: Any = None) -> None:
    """The window ending at `step`: `ready` are arrays its last step computed."""
    self._excluded[step], self._open_excluded = self._open_excluded, 0.0
    self._stamp(step, ready)

  @contextlib.contextmanager
  def excluded(self, ready: Any = None):
    """Times the block as not training: waits for `ready` (the state) first, so the steps
    queued before it count as training, then excludes the block's wall time."""
    if ready is not None:
      jax.block_until_ready(ready)
    t0 = self._time_fn()
    try:
      yield
    finally:
      self._open_excluded += self._time_fn() - t0

  def report(self, step: int) -> dict[str, float] | None:
    """Scalars of the window ending at the marked `step` (waits for its finish time, which
    one window later is long known); None for an unmarked step or before `start`."""
    if self._last is None or step not in self._excluded or step <= self._last:
      return None
    with self._cv:
      self._cv.wait_for(lambda: step in self._done and self._last in self._done)
      finished, began = self._done.pop(step), self._done.pop(self._last)
      self._done[step] = finished  # the next window starts here
    excluded = self._excluded.pop(step)
    seconds = max(finished - began - excluded, 1e-9)
    steps = step - self._last
    self._last = step
    self.totals["steps"] += steps
    self.totals["seconds"] += seconds
    self.totals["excluded_seconds"] += excluded
    steps_per_sec = steps / seconds
    out = {
      "perf/steps_per_sec": steps_per_sec,
      "perf/images_per_sec": steps_per_sec * self.batch_size,
      "perf/eta_seconds": max(self.num_steps - step, 0) / steps_per_sec,
      "perf/window_seconds": seconds,
      "perf/excluded_seconds": excluded,
    }
    if self.flops_per_step and self.peak_flops:
      out["perf/mfu"] = self.flops_per_step * steps_per_sec / self.peak_flops
    return out

  def excluded_seconds(self) -> float:
    """Seconds timed apart over the reported windows and since the last mark (a final
    evaluation after the last window belongs to no window but was still timed apart)."""
    return self.totals["excluded_seconds"] + self._open_excluded

  def close(self) -> None:
    """Stops the watcher thread (marks not yet reported are dropped)."""
    if self._thread is not None:
      self._queue.put(None)
      self._thread.join()
      self._thread = None


def format_progress(
  step: int, num_steps: int, scalars: Mapping[str, float], unit: str = "img"
) -> str:
  """The console line of one log window (about 90 characters), e.g.
  `step 1200/4000 | loss 0.0412 | grad 0.31 | lr 1.00e-03 | 5,120 img/s | ETA 3m05s`.
  `unit`: what one example is, for the throughput (`example_unit`: img, or seq for DNA and
  text; the scalar `perf/images_per_sec` counts examples whatever they are)."""
  parts = [f"step {step}/{num_steps}"]
  for key, label, fmt in (
    ("loss", "loss", ".4g"),
    ("grad_norm", "grad", ".3g"),
    ("learning_rate", "lr", ".2e"),
    ("perf/images_per_sec", None, ",.0f"),
  ):
    if key in scalars:
      value = format(scalars[key], fmt)
      parts.append(f"{value} {unit}/s" if label is None else f"{label} {value}")
  if "perf/eta_seconds" in scalars:
    parts.append(f"ETA {format_duration(scalars['perf/eta_seconds'])}")
  return " | ".join(parts)


def example_unit(encoding) -> str:
  """The console's name for one training example: `seq` for token data (a source with an
  `encoding`: DNA, text), `img` otherwise."""
  return "img" if encoding is None else "seq"


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

  @property
  def pending_end_step(self) -> int | None:
    """The last step of the window pushed and not yet fetched (None if there is none)."""
    return None if self._pending is None else self._pending[1]

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
  if bad:
    raise non_finite_error(bad, step_range, checkpoint_path)


def non_finite_error(
  bad: dict[str, str], step_range: tuple[int, int], checkpoint_path: str | None
) -> NonFiniteError:
  """The error for metrics `bad` ({name: 'NaN' | 'Inf'}) seen in `step_range`, naming the last
  good checkpoint `checkpoint_path` (None: none saved yet)."""
  what = ", ".join(f"{name} became {kind}" for name, kind in bad.items())
  where = (
    f"last good checkpoint is kept at {checkpoint_path} (a rerun of the same command repeats "
    "the same steps, and a resume may not change optim.* or the model: train again in a new "
    "--workdir with a lower optim.lr, a longer optim.warmup_steps or a lower optim.grad_clip; "
    "this workdir's checkpoints stay for sample/evaluate)"
    if checkpoint_path
    else "no checkpoint was saved before it (fix the setting and rerun with --fresh: this "
    "attempt's logs are then moved aside)"
  )
  return NonFiniteError(
    f"{what} between steps {step_range[0]} and {step_range[1]}; {where}", bad, step_range
  )
