"""Training orchestration: mesh, state, data, writers, checkpoints, the loop.

Library logic lives elsewhere (steps.py, schedules/, models/, data/); this module only
wires it together. Resume order: build the template state (shardings known), restore
the latest checkpoint into it if one exists, then continue the data stream at the
restored step (the pipeline is a pure function of the step).
"""

import collections
import dataclasses
import functools
import gc
import json
import os
import shlex
import threading
import time
from concurrent.futures import Future
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from infonoise_jax import (
  checkpointing,
  diagnostics,
  flops,
  metrics,
  paths,
  resume,
  sample_files,
  step_executables,
  steps,
  writers,
)
from infonoise_jax import workdir as workdir_lib
from infonoise_jax.data import (
  DevicePrefetcher,
  Pipeline,
  load_source,
  resolve_data_paths,
  resolve_sigma_data,
)
from infonoise_jax.data.sources import physical_memory_bytes
from infonoise_jax.evaluation import model_fid, sequence_eval
from infonoise_jax.mesh import make_mesh
from infonoise_jax.model_sampler import Sampler
from infonoise_jax.models import make_model
from infonoise_jax.schedules import SCHEDULES, make_schedule
from infonoise_jax.schedules.adaptive import Binned
from infonoise_jax.train_state import TrainState, abstract_state, make_optimizer
from infonoise_jax.validation import validate_config


class Run:
  """Everything built once before the loop starts (validated before any compile)."""

  @functools.cached_property
  def config_json(self) -> dict:
    """The resolved config as JSON values (each checkpoint's metadata keeps a copy)."""
    return json.loads(self.config.to_json_best_effort())

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, devices=None):
    validate_config(config, None if devices is None else len(devices))
    self.config = config
    self.workdir = workdir
    resolve_data_paths(config)  # config.json then finds the data from any directory
    self.source = load_source(config)
    resolve_sigma_data(config, self.source.encoding)
    self.model = make_model(config, self.source.shape)
    self.schedule = make_schedule(config)
    self.optimizer = make_optimizer(config)
    self.mesh = make_mesh(devices)
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    self.pipeline = Pipeline(
      self.source,
      config.train.batch_size,
      config.seed,
      jax.process_index(),
      jax.process_count(),
      random_flip=config.data.random_flip,
    )
    self.abstract_state = abstract_state(self._init, self.replicated)
    check_state_fits(config, self.abstract_state, self.mesh.devices.flat)
    # What `global_batch` makes (the pipeline's batches are float32): with the abstract state,
    # all the step's compile needs, so `CompileAhead` compiles it before the state or the
    # first batch exists.
    self.abstract_batch = jax.ShapeDtypeStruct(
      (config.train.batch_size, *self.source.shape), jnp.float32, sharding=self.batch_sharding
    )
    self.state_sharding = jax.tree.map(lambda a: a.sharding, self.abstract_state)
    self.init_fn = jax.jit(self._init, out_shardings=self.state_sharding)
    self.train_step = jax.jit(
      steps.make_train_step(config, self.model, self.schedule, self.optimizer),
      in_shardings=(self.state_sharding, self.batch_sharding),
      out_shardings=(self.state_sharding, self.replicated),
      donate_argnums=0,
    )
    self.copy_state = jax.jit(
      lambda s: jax.tree.map(jnp.copy, s), out_shardings=self.state_sharding
    )
    # One jitted function per run (not per window logger), so what CompileAhead compiles is
    # what the loop calls.
    self.history_curve = jax.jit(functools.partial(diagnostics.history_curve, self))
    self.ahead: CompileAhead | None = None  # started by _train when there is a step to take
    # One sampler for the run's sample grids and periodic FID (one compile per batch size).
    self.sampler = Sampler(config, self.model, self.schedule, self.mesh, self.source.shape)

  def _init(self) -> TrainState:
    return steps.init_state(
      self.model, self.schedule, self.optimizer, self.source.shape, self.config.seed
    )

  def global_batch(self, local_BX: np.ndarray) -> jax.Array:
    shape = (self.config.train.batch_size, *local_BX.shape[1:])
    return jax.make_array_from_process_local_data(self.batch_sharding, local_BX, shape)

  def device_batches(self, start_step: int, num_workers: int, buffer_size: int = 2):
    """Global batches of steps start_step, start_step + 1, ... already on the devices:
    made by the pipeline (a thread or grain workers) and copied `buffer_size` steps ahead
    by one more thread. `close()` it."""
    host = self.pipeline.iterate(start_step, num_workers=num_workers)
    return DevicePrefetcher(host, self.global_batch, buffer_size)

  def num_params(self, state: TrainState) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))


# The model keys that size the network, per model.name (named when its state cannot fit).
SIZE_KEYS = {
  "unet": "model.model_channels, model.channel_mult or model.num_blocks",
  "mlp": "model.hidden_dims",
  "transformer": "model.width, model.depth or model.mlp_ratio",
}


def check_state_fits(config, state, devices) -> None:
  """Refuses, before any compile or allocation, a model whose train state alone (parameters,
  optimizer moments, EMA, schedule state; every device holds all of it) is larger than a
  device's memory: the step's activations come on top, so such a run could only fail later
  with an out-of-memory error. This process's devices are asked; CPU devices, which do not
  report their memory, share this machine's: all of them together are held against it. An
  accelerator that reports nothing is not checked."""
  local = [d for d in devices if d.process_index == jax.process_index()] or list(devices)
  per_device = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(state))
  try:
    stats = local[0].memory_stats() or {}
  except Exception:  # noqa: BLE001  (a backend without memory statistics)
    stats = {}
  limit, need = stats.get("bytes_limit"), per_device
  if limit:
    where = f"the {limit / 2**30:.1f} GiB of one {local[0].device_kind} device"
  elif local[0].platform == "cpu":  # host memory, shared by every local device
    limit = physical_memory_bytes()
    need = per_device * len(local)
    where = f"this machine's {(limit or 0) / 2**30:.1f} GiB of memory" + (
      f" ({len(local)} devices each holding a copy)" if len(local) > 1 else ""
    )
  if not limit or need <= limit:
    return
  params = sum(a.size for a in jax.tree.leaves(state.params))
  keys = SIZE_KEYS.get(config.model.name, "the model's size keys")
  raise ValueError(
    f"config.model: this {config.model.name} has {params:,} parameters, and its train state "
    f"(parameters, Adam moments, EMA) takes {need / 2**30:.1f} GiB, more than {where}, "
    f"before any activations. Use a smaller network ({keys}). Nothing was written."
  )


HISTORY = "schedule_history"  # the window's schedule curve (diagnostics.history_curve)


class _WindowLogger:
  """Aggregates step metrics per log window (clu metrics, on device); fetches, checks and
  writes them one window late, and prints one progress line per window on process 0."""

  def __init__(self, run: Run, writer, ckpt: checkpointing.Checkpointer, start: int):
    self.run, self.writer, self.ckpt = run, writer, ckpt
    t = run.config.train
    self.fetcher = metrics.DelayedFetcher(start)
    # Started by _first_step_done, with the step's FLOPs and the devices' peak.
    self.progress = metrics.ProgressReporter(t.num_steps, t.batch_size)
    self.window, self.window_start = None, start
    self.checkpoint_seconds = 0.0  # host time spent saving in the open window
    self.checkpoint_total = 0.0
    # Where the loop's thread waited in the open window: for the next batch (the data
    # pipeline fell behind: a host stall) and for the step `max_steps_in_flight` back (the
    # device is the bottleneck, as it should be), and inside the step's call (dispatch: on a
    # GPU the host launching the step's kernels, and blocking there once the launch queue is
    # full; the GPU's busy fraction tells the two apart: BENCHMARKS.md, item 2). Logged as
    # perf/data_wait_seconds, perf/device_wait_seconds and perf/dispatch_seconds.
    self.data_wait, self.device_wait, self.dispatch = 0.0, 0.0, 0.0
    self._waits: dict[int, tuple[float, float, float]] = {}
    self.loss_by_log_sigma = None  # the latest window's per-bin mean loss (for the plots)
    self.window_losses = []  # (mean loss, end step) of every window written
    # (step, schedule curve) per window; a resume starts from the rows its checkpoint kept
    self.history = diagnostics.load_history(ckpt.workdir, start)
    self._history_curve = run.history_curve
    self.unit = metrics.example_unit(run.source.encoding)  # img, or seq for DNA and text
    self._checkpoint_seconds: dict[int, float] = {}

  def add(self, step_metrics: dict) -> None:
    self.window = metrics.accumulate(self.window, step_metrics)

  def end_window(self, step: int, state: TrainState) -> None:
    values = metrics.compute_window(self.window)
    values[HISTORY] = self._history_curve(state.schedule_state)
    self.progress.mark(step, values["loss"])  # finished when the window's last step is
    self._checkpoint_seconds[step], self.checkpoint_seconds = self.checkpoint_seconds, 0.0
    self._waits[step] = (self.data_wait, self.device_wait, self.dispatch)
    self.data_wait, self.device_wait, self.dispatch = 0.0, 0.0, 0.0
    done = self.fetcher.push(step, values)
    self.window, self.window_start = None, step
    if done is not None:
      self._write(done)

  def flush(self, step: int) -> None:
    """Writes every pending window and checks the open one (before a checkpoint or exit)."""
    done = self.fetcher.flush()
    if done is not None:
      self._write(done)
    if self.window is not None:
      host = jax.device_get(metrics.compute_window(self.window))
      checked = {k: host[k] for k in ("loss", "grad_norm")}
      metrics.check_finite(checked, (self.window_start, step), self.last_good())

  def flush_through(self, step: int) -> None:
    """Writes (checking it) the pending window if it ends by `step`, without waiting for
    later steps: before a deferred save of `step`, every window up to it is checked."""
    end = self.fetcher.pending_end_step
    if end is not None and end <= step:
      self._write(self.fetcher.flush())

  def loss_for_plot(self) -> tuple[np.ndarray, np.ndarray] | None:
    """(bin edges, per-bin mean loss) for a sample grid's loss-by-noise plot: the latest
    window written; before any was written by this process (a resumed run's first grid can
    come before its first window ends, the earlier windows being the stopped process's; so
    can a grid before a run's first window ends), the steps since the start or resume, the
    window so far. None: no step taken."""
    if self.loss_by_log_sigma is not None:
      return self.loss_by_log_sigma
    if self.window is None:
      return None
    loss = jax.device_get(metrics.compute_window(self.window)[metrics.BINNED_LOSS])
    return diagnostics.loss_bin_edges(self.run.config), np.asarray(loss)

  def open_window(self) -> tuple[int, dict] | None:
    """(first step, loss and grad norm as device arrays) of the window so far, or None."""
    if self.window is None:
      return None
    values = metrics.compute_window(self.window)
    return self.window_start, {k: values[k] for k in ("loss", "grad_norm")}

  def add_checkpoint_time(self, seconds: float) -> None:
    """Host time of one save: the guard's fetch and Orbax's blocking part (a final or
    preemption save: after the queued steps finished, so the device idles for all of it;
    a periodic one: while the device runs the steps queued before it)."""
    self.checkpoint_seconds += seconds
    self.checkpoint_total += seconds

  def summary(self) -> None:
    """One line on the whole run's training throughput (after `flush`)."""
    total = self.progress.totals
    if not total["steps"] or jax.process_index() != 0:
      return
    rate = total["steps"] / total["seconds"]
    logging.info(
      "Throughput over %d timed step%s: %s %s/s (%.2f steps/s; windows timed as the device "
      "finished them, the first step's compiling left out); %.1f s of sample grids and "
      "evaluations timed apart; %.1f s spent in checkpoint saves, included.",
      total["steps"],
      "" if total["steps"] == 1 else "s",
      format(rate * self.run.config.train.batch_size, ",.0f"),
      self.unit,
      rate,
      self.progress.excluded_seconds(),
      self.checkpoint_total,
    )
    warning = diverged_warning(self.window_losses)
    if warning:
      logging.warning(warning)

  def last_good(self) -> str | None:
    last = self.ckpt.latest_step()
    return None if last is None else f"{self.ckpt.directory}/{last}"

  def _write(self, done: metrics.FetchedWindow) -> None:
    host, step = done.metrics, done.end_step
    scalars = {k: v for k, v in host.items() if np.ndim(v) == 0}
    metrics.check_finite(scalars, (done.start_step, step), self.last_good())
    scalars.update(self.progress.report(step) or {})
    scalars["perf/checkpoint_seconds"] = self._checkpoint_seconds.pop(step, 0.0)
    waits = self._waits.pop(step, (0.0, 0.0, 0.0))
    for name, seconds in zip(("data_wait", "device_wait", "dispatch"), waits, strict=True):
      scalars[f"perf/{name}_seconds"] = seconds
    self.writer.write_scalars(step, scalars)
    self.window_losses.append((float(scalars["loss"]), step))
    edges = diagnostics.loss_bin_edges(self.run.config)
    counts = host[metrics.SIGMA_COUNTS]
    self.writer.write_histograms(
      step, {"log_sigma": metrics.histogram_values(edges, counts)}, {"log_sigma": len(counts)}
    )
    self.loss_by_log_sigma = (edges, host[metrics.BINNED_LOSS])
    self.history.append((step, host[HISTORY]))
    if jax.process_index() == 0:
      step_line = metrics.format_progress(step, self.run.config.train.num_steps, scalars, self.unit)
      logging.info(step_line)


DIVERGED_FACTOR = 10.0  # the last window's loss this many times the run's median: said


def diverged_warning(window_losses: list[tuple[float, int]]) -> str | None:
  """What to say when a run ends with its loss far above the median of its windows' (mean
  loss, end step): diverged to finite values, which no NaN check stops. None otherwise, with
  under 3 windows, and for losses that can be negative (EDM2's uncertainty-weighted loss),
  where a ratio says nothing. The median, not the lowest window: small windows are noisy."""
  if len(window_losses) < 3:
    return None
  median = float(np.median([loss for loss, _ in window_losses]))
  last, step = window_losses[-1]
  if median <= 0 or last <= DIVERGED_FACTOR * median:
    return None
  return (
    f"The loss ended at {last:.4g} (window ending at step {step}), {last / median:.0f}x the "
    f"median of this run's {len(window_losses)} log windows ({median:.4g}): the run has "
    "probably diverged (its values stayed finite, so nothing stopped it). Lower optim.lr or "
    "lengthen optim.warmup_steps and train again (--fresh)"
  )


def data_workers(config: ml_collections.ConfigDict, source) -> int:
  """data.num_workers, with -1 resolved: grain workers only where examples are read lazily."""
  n = config.data.num_workers
  if n >= 0:
    return n
  in_memory = source.reader is None or source.token_ids is not None  # tokens: encoded cheaply
  return 0 if in_memory else max(1, min(16, (os.cpu_count() or 2) // 2))


def warn_if_two_level_data_mismatches_sigma_data(config: ml_collections.ConfigDict, source) -> None:
  """Two-level images (data.binarize, or a bool array) at +-data.scale have a std near
  data.scale, not the 0.5 of edm.sigma_data's default for images in [-1, 1]: EDM's
  preconditioning assumes the data std; says so when they differ by more than 1.5x."""
  x = source.array
  if x is None or not source.is_image or source.encoding is not None:
    return
  if not source.binarized and np.unique(np.asarray(x[:64])).size != 2:  # a cheap look first
    return
  sample = np.asarray(x[:: max(1, len(x) // 2048)], np.float32)
  if not source.binarized and np.unique(sample).size != 2:
    return
  std, sigma = float(sample.std()), float(config.edm.sigma_data)
  if std > 0 and max(std / sigma, sigma / std) > 1.5:
    logging.warning(
      "the two-level images at +-%g have std %.3g, and edm.sigma_data=%g (EDM's for images in "
      "[-1, 1]): the network's preconditioning assumes the data's std. Set "
      "--config.data.scale=%.3g (the config variant `binarized` uses 0.5) or "
      "--config.edm.sigma_data=%.3g",
      source.scale, std, sigma, source.scale * sigma / std, std,
    )  # fmt: skip


def warn_if_schedule_never_adapts(config: ml_collections.ConfigDict) -> None:
  """Says so when `train.num_steps` ends before the schedule's first refresh from the data."""
  name, n = config.schedule.name, config.train.num_steps
  if name == "infonoise":
    key, warmup = "schedule.infonoise.warmup_steps", config.schedule.infonoise.warmup_steps
  elif issubclass(SCHEDULES.get(name, object), Binned):  # not EDM2: it learns from step 0
    key, warmup = "schedule.adaptive.warmup_steps", config.schedule.adaptive.warmup_steps
  else:
    return
  if n <= max(warmup, 1):
    logging.warning(
      "train.num_steps=%d <= %s=%d: the %s schedule first adapts after step %d, so this run "
      "trains on its warm-up distribution (schedule base) throughout. Lower %s or train longer.",
      n,
      key,
      warmup,
      name,
      max(warmup, 1),
      key,
    )


def warn_if_settings_outlast_run(config: ml_collections.ConfigDict, step: int) -> None:
  """Says so when a step-counted setting cannot take effect in the steps this run trains:
  the learning-rate warm-up never ends, or the device trace's start lies outside them."""
  t, o = config.train, config.optim
  if o.warmup_steps >= t.num_steps:
    logging.warning(
      "optim.warmup_steps=%d >= train.num_steps=%d: the learning rate is still warming up when "
      "the run ends and never reaches optim.lr=%g. Lower --config.optim.warmup_steps or train "
      "longer.",
      o.warmup_steps,
      t.num_steps,
      o.lr,
    )
  if t.trace_start and not step <= t.trace_start < t.num_steps:
    logging.warning(
      "train.trace_start=%d is outside the steps this run trains (%d to %d), so no device "
      "trace is written; set it inside them (or 0 = off).",
      t.trace_start,
      step,
      t.num_steps,
    )


@jax.jit
def _nonfinite_parts(state: TrainState) -> dict:
  """Per top-level field of the state: True where any float leaf holds NaN or Inf."""
  bad = lambda tree: jnp.any(
    jnp.stack(
      [
        jnp.any(~jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
      ]
      or [jnp.bool_(False)]
    )
  )
  return {
    k: bad(getattr(state, k)) for k in ("params", "ema_params", "opt_state", "schedule_state")
  }


def _guard_values(state: TrainState, next_metrics: dict) -> dict:
  """The checkpoint guard's inputs, as device arrays: NaN where a part of `state` is not
  finite, and the loss and gradient norm of the step taken from it (`next_metrics`)."""
  return {
    "next loss": next_metrics["loss"],
    "next grad_norm": next_metrics["grad_norm"],
    **{f"state {k}": jnp.where(v, jnp.nan, 0.0) for k, v in _nonfinite_parts(state).items()},
  }


def _check_guard(host: dict, step: int, last_good: str | None) -> None:
  try:
    metrics.check_finite(host, (step, step + 1), last_good)
  except metrics.NonFiniteError as e:
    raise metrics.NonFiniteError(
      f"Not saving the state of step {step}, it has diverged: {e}", e.metrics, e.step_range
    ) from None


def check_before_save(
  run: Run, train_step, state: TrainState, step: int, last_good: str | None
) -> None:
  """Raises NonFiniteError unless `state` is finite and its next step's loss is too.

  A finite state can still be diverged (with lr 1e9 the parameters reach 1e9 and the next
  forward pass overflows), so the next step is taken on a copy (the same compiled step) and
  its loss and gradient norm are checked as well. (In the loop, periodic saves check the
  real next step instead: `_PendingSave`.)
  """
  probe, probe_metrics = train_step(  # the loop's own program: nothing compiles here
    run.copy_state(state), run.global_batch(run.pipeline.batch(step))
  )
  host = jax.device_get(_guard_values(state, probe_metrics))
  del probe
  _check_guard(host, step, last_good)


def _save(
  run: Run,
  ckpt: checkpointing.Checkpointer,
  step: int,
  state: TrainState,
  history: list,
  background=False,
) -> None:
  """Starts Orbax's save of `state` with the metadata that sample/evaluate need
  (`background`: on the checkpointer's thread, for a state copy nothing else touches), and
  writes the schedule-history rows up to `step` beside it (a resume from it reads them)."""
  # The example shape lets sample/evaluate rebuild the model without the data; the config is
  # in <workdir>/config.json, and a copy here lets a resume check a workdir that lost it.
  meta = {"step": step, "data_shape": list(run.source.shape), "config": run.config_json}
  if run.source.encoding is not None:  # the run's fixed vocabulary, for decoding
    meta["vocab"] = run.source.encoding.vocab
    meta["held_out"] = run.source.stats.held_out_digest  # resume / evaluate compare it
    meta["trained_on"] = run.source.stats.train_digest  # resume compares it
  (ckpt.save_in_background if background else ckpt.save)(step, state, meta=meta, force=True)
  diagnostics.save_history(ckpt.workdir, history, step)


CPU_COLLECTIVE_STEPS_IN_FLIGHT = 8  # at most, on several CPU devices (steps_in_flight)


def steps_in_flight(run: Run) -> int:
  """How many dispatched steps the host may run ahead of the device (0 = no bound):
  train.max_steps_in_flight, at most CPU_COLLECTIVE_STEPS_IN_FLIGHT on several CPU devices.
  There, with dozens of steps queued, XLA's CPU collectives stop in a rendezvous that times out
  and aborts the process (exit 134, nothing saved): with 32 (the default) or no bound on 8
  CPU devices within 300-800 steps of configs/test.py, also in a bare jitted loop, never with
  16 or fewer. A CPU run gains nothing from a deep queue."""
  limit = run.config.train.max_steps_in_flight
  if run.mesh.devices.size > 1 and run.mesh.devices.flat[0].platform == "cpu":
    return min(limit or CPU_COLLECTIVE_STEPS_IN_FLIGHT, CPU_COLLECTIVE_STEPS_IN_FLIGHT)
  return limit


class _InFlight:
  """Bounds how many dispatched steps the device has not finished: after step i is
  dispatched, `add(i, marker)` waits for step i - limit (`marker`: a small array each step
  computes), so the host never runs more than `limit` steps ahead; 0 = no bound.

  Without a bound the host can run up to two log windows (hundreds of steps) ahead between
  syncs; on an H200 the rate fell from 100% to 70-90% of the bare step over such windows, a
  deep queue being the suspect (BENCHMARKS.md, item 2). Waiting on a step that is `limit`
  behind costs the device nothing while the host keeps `limit` steps queued.
  """

  def __init__(self, limit: int):
    self.limit = limit
    self._markers: collections.deque = collections.deque()

  def add(self, step: int, marker) -> None:
    if not self.limit:
      return
    self._markers.append((step, marker))
    while len(self._markers) > self.limit:
      self._wait(*self._markers.popleft())

  def _wait(self, step: int, marker) -> None:
    """Returns once step `step` (which computed `marker`) has finished on the device."""
    jax.block_until_ready(marker)


@dataclasses.dataclass
class _PendingSave:
  """A periodic checkpoint whose guard still runs on the device while training goes on.

  At `step` the loop dispatches a copy of the state (`snapshot`, the one saved), its
  non-finite checks and the open log window's metrics, without waiting; the guard's "next
  step" is the loop's own step `step + 1` (same state, same batch: the pipeline is a pure
  function of the step). At `due`, `max_steps_in_flight` + 1 steps later (the in-flight
  wait has covered step + 1 by then, so nothing waits) but at most half a checkpoint
  interval + 1 later, or at the next save, the small
  results are fetched, checked, and the snapshot is saved while the device still has the
  queued steps to run, instead of idling through the whole guard and Orbax's blocking part.
  A NaN or diverged snapshot is never saved: the checks are the same as
  `check_before_save`'s, and every log window up to `step` is checked first.
  """

  step: int
  due: int
  snapshot: TrainState
  window: tuple[int, dict] | None  # the open log window: (first step, device metrics)
  guard: dict | None = None  # _guard_values, once step + 1 is dispatched


def _start_save(run: Run, log: _WindowLogger, state: TrainState, step: int) -> _PendingSave:
  t = run.config.train
  # At `due` the in-flight wait has covered step + 1, so nothing waits; but never later than
  # half a checkpoint interval: with checkpoint_every <= max_steps_in_flight a save would
  # otherwise reach the disk only at the next checkpoint, and a kill could cost two intervals
  # (fetching the guard earlier may wait for step + 1 while later steps keep the device busy).
  due = step + 1 + min(steps_in_flight(run), t.checkpoint_every // 2)
  return _PendingSave(step, due, run.copy_state(state), log.open_window())


def _finish_save(run: Run, ckpt, log: _WindowLogger, pending: _PendingSave) -> None:
  """Checks the pending save's windows and guard (raising NonFiniteError), then saves."""
  step = pending.step
  log.flush_through(step)  # every window up to the step is checked
  log.writer.flush()  # ... and on disk before the step is: a resume never logs them again
  window = None if pending.window is None else pending.window[1]
  host_window, host = jax.device_get((window, pending.guard))
  if host_window is not None:
    metrics.check_finite(host_window, (pending.window[0], step), log.last_good())
  _check_guard(host, step, log.last_good())
  _save(run, ckpt, step, pending.snapshot, log.history, background=True)  # the loop goes on


class _AheadStep(NamedTuple):
  program: Any  # jax.stages.Compiled: call it as run.train_step
  count: flops.StepFlops
  seconds: float
  source: str


class CompileAhead:
  """Compiles the train step and the loop's small programs on background threads, from
  `run.abstract_state` and `run.abstract_batch` alone, while the main thread restores or
  initialises the state and starts the data and the writer.

  Why: on a restart the step's trace and lowering (needed before the persistent cache is even
  looked up), loading the executables and the small programs after the step were ~14 s of the
  ~25 s to the first step (BENCHMARKS.md, item 3), and none of it needs the real state. The
  loop calls the compiled step that `step()` returns (built here, or loaded from
  `step_executables`); for the small programs jax keeps what `jit(f).lower(args).compile()`
  built for the later call `f(args)` with arguments of the same types and shardings, so each
  program is compiled once (tests/train_test.py counts the compiles).

  `step()` and `helpers()` wait for their part and re-raise its error in the caller's thread.
  """

  def __init__(self, run: Run):
    self._step: Future = Future()
    self._helpers: Future = Future()
    self._started = time.monotonic()
    # Not daemons: a daemon thread still inside XLA at interpreter exit can abort the process.
    threading.Thread(target=self._compile_step, args=(run,), name="compile_ahead").start()

  def _compile_step(self, run: Run) -> None:
    """Loads the step from `step_executables` or traces, counts and lowers it, hands its
    metrics' types to a second thread for the small programs, then compiles (or loads from
    the persistent cache) the step: XLA holds no Python lock while it does, so the small
    programs' tracing runs meanwhile. A compiled step is stored for the next start."""
    helpers_started = False
    try:
      directory = step_executables.folder() if run.config.system.store_train_step else None
      key = directory and step_executables.step_key(
        run.config, run.abstract_state, run.abstract_batch
      )
      stored = key and step_executables.load(directory, key, run.mesh.devices.flat)
      if stored:
        compiled, count = stored
        self._start_helpers(run, compiled.out_info[1])
        helpers_started, source = True, f"loaded from {directory}"
      else:
        traced = run.train_step.trace(run.abstract_state, run.abstract_batch)
        count = flops.step_flops(traced.jaxpr)
        lowered = traced.lower()
        self._start_helpers(run, lowered.out_info[1])
        helpers_started = True
        with step_executables.cache_hits_on_this_thread() as hits:
          compiled = lowered.compile()
        if hits:
          source = "traced, loaded from the persistent compilation cache"
        else:
          source = "traced and compiled"
          if key:
            step_executables.save(directory, key, compiled, count)
    except BaseException as e:  # handed to the main thread as it is
      self._step.set_exception(e)
      if not helpers_started:
        self._helpers.set_exception(e)
      return
    self._step.set_result(_AheadStep(compiled, count, time.monotonic() - self._started, source))

  def _start_helpers(self, run: Run, step_metrics: dict) -> None:
    threading.Thread(
      target=self._compile_helpers, args=(run, step_metrics), name="compile_ahead_helpers"
    ).start()

  def _compile_helpers(self, run: Run, step_metrics: dict) -> None:
    try:
      _compile_helpers(run, step_metrics)
    except BaseException as e:
      self._helpers.set_exception(e)
    else:
      self._helpers.set_result(time.monotonic() - self._started)

  def step(self) -> "_AheadStep":
    """The compiled step (what the loop calls), its FLOP count from its jaxpr, the seconds
    from the start until it was ready, and where it came from."""
    return self._step.result()

  def helpers(self) -> float:
    """Seconds from the start until the small programs were compiled."""
    return self._helpers.result()


def _compile_helpers(run: Run, step_metrics: dict) -> None:
  """Compiles the small programs the loop runs (the window metrics, the checkpoint guard's
  programs), chaining output types so each signature matches the loop's calls exactly: no
  log window pays for compiling them."""
  one = metrics.accumulate.lower(None, step_metrics).compile()
  two = metrics.accumulate.lower(one.out_info, step_metrics).compile()
  metrics.compute_window.lower(two.out_info).compile()
  run.history_curve.lower(run.abstract_state.schedule_state).compile()
  _nonfinite_parts.lower(run.abstract_state).compile()
  run.copy_state.lower(run.abstract_state).compile()


def _first_step_done(run: Run, state, log, started: float, step: int):
  """After the run's first step: waits for it (it includes what is left of compiling the
  step) and for the small programs `run.ahead` compiles, then starts the throughput clock,
  so no log window pays for compiling. The step's FLOPs come from `run.ahead`'s trace."""
  jax.block_until_ready(state)
  seconds = time.monotonic() - started
  helpers_s = run.ahead.helpers()  # its errors are raised here
  ahead = run.ahead.step()
  count = ahead.count
  logging.info(
    "Compiled ahead on threads: the step after %.1f s (%s), the loop's small programs after "
    "%.1f s (counted from their start, before the state was restored or initialised).",
    ahead.seconds,
    ahead.source,
    helpers_s,
  )
  # Everything made so far (modules, programs, the model's structure) lives for the whole run:
  # out of the cyclic garbage collector's sight, a full collection in the loop scans only what
  # the loop itself made (docs/design.md, "The loop and the garbage collector").
  gc.collect()
  gc.freeze()
  kind, peak = flops.device_peak(run.config)
  n = jax.device_count()
  log.progress.flops_per_step = count.flops
  log.progress.peak_flops = None if peak is None else peak * 1e12 * n
  log.progress.start(step)
  if peak is None:
    mfu = flops.unknown_peak_message(kind)
  else:
    mfu = f"logged as perf/mfu against {peak:g} TFLOP/s x {n} ({kind}, {run.config.model.dtype})"
  logging.info(
    "First step (with compiling) took %.1f s. Model FLOPs: %.4g GFLOP per step (%s); MFU %s",
    seconds,
    count.flops / 1e9,
    count.source,
    mfu,
  )


def _checkpoint_vocabulary_to_pin(run: Run, workdir: str) -> str | None:
  """The checkpoint's vocabulary, when a resumed run derives its vocabulary from the files
  (data.vocab unset) and the files now give a strict subset of it: letters only lost (e.g. the
  byte-order mark that text runs before 2026-12-03 took for a letter). Token ids keep their
  meaning on the checkpoint's vocabulary and the lost letters simply never occur, so the run
  goes on with data.vocab pinned to it (said on the console; a resumable change). None
  otherwise; resume.check_same_vocabulary refuses the other differences."""
  encoding, saved = run.source.encoding, checkpointing.saved_steps(workdir)
  if encoding is None or run.config.data.vocab or not saved:
    return None
  vocab = (saved_meta(workdir, saved[-1]) or {}).get("vocab")
  if not vocab or vocab == encoding.vocab or not set(encoding.vocab) < set(vocab):
    return None
  lost = "".join(sorted(set(vocab) - set(encoding.vocab)))
  logging.warning(
    "Resuming %s: the data files no longer give the letters %r of the checkpoint's %d-symbol "
    "vocabulary; training goes on with data.vocab pinned to the checkpoint's (those letters "
    "never occur).",
    workdir,
    lost,
    len(vocab),
  )
  return vocab


def saved_meta(workdir: str, step: int) -> dict | None:
  """The metadata saved with `step` (data shape, vocabulary), or None when it is unreadable
  (the restore then moves the step aside and says so)."""
  reader = checkpointing.Checkpointer(workdir, 1, create=False)
  try:
    return reader.restore_meta(step)
  except checkpointing.CheckpointError:
    return None
  finally:
    reader.close()


def _restore_or_init(run: Run, ckpt: checkpointing.Checkpointer) -> TrainState:
  """The newest readable checkpoint (corrupt newer ones are moved aside), else a new state."""
  restored = ckpt.restore_newest_good(run.abstract_state)
  if restored is None:
    return run.init_fn()
  state = restored[0]
  logging.info("Resumed from %s at step %d", ckpt.directory, int(state.step))
  return state


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, devices=None, fresh: bool = False
) -> TrainState:
  """Trains from scratch or resumes from `workdir`; returns the final state.

  Nothing is written to `workdir` until the config is valid, the workdir's lock is held, a
  resume's changes are allowed (resume.py) and the checkpoint is restored. `fresh`: start
  over in a workdir that has logs but no checkpoint, moving the old logs aside.
  """
  workdir_lib.check_is_directory(workdir)
  workdir_lib.check_outside_data(workdir, config.data.get("path", ""))
  # One process: a SIGTERM before or after the steps exits as a preemption (no stale lock, no
  # 143); several: JAX's preemption service owns SIGTERM (see _loop).
  with checkpointing.sigterm_stops_outside_loop(active=jax.process_count() == 1):
    if jax.process_index() == 0:
      writers.check_available()  # the loop's event writer, before any data or compile work
    pristine = config.copy_and_resolve_references()  # before Run resolves derived values
    run = Run(config, workdir, devices)  # validates, loads the data, resolves derived values
    pinned = _checkpoint_vocabulary_to_pin(run, workdir)
    if pinned is not None:  # an older text run: its letters, with the ones the files lost
      pristine.data.vocab = pinned
      run = Run(pristine, workdir, devices)
    with workdir_lib.Lock(workdir):
      return _train(run, workdir, fresh)


def _train(run: Run, workdir: str, fresh: bool) -> TrainState:
  config = run.config
  saved = checkpointing.saved_steps(workdir)
  earlier_attempt = not saved and resume.is_earlier_attempt(config, workdir)
  workdir_lib.check_start(workdir, saved, fresh, earlier_attempt)
  meta = saved_meta(workdir, saved[-1]) if saved else None
  if meta:
    resume.check_same_vocabulary(config, run.source, workdir, saved[-1], meta)
  accepted = resume.check(config, workdir, saved[-1], meta) if saved else {}
  if meta:  # after the config check: a refused change (data.val_fraction) gets no warning first
    resume.check_same_shape(config, run.source, workdir, saved[-1], meta)
    if not resume.warn_if_held_out_changed(config, run.source, meta, workdir, saved[-1]):
      resume.warn_if_training_data_changed(config, run.source, meta, workdir, saved[-1])
  periodic_fid = None  # built before anything is written: missing weights or non-images fail
  if config.train.fid_every:
    periodic_fid = model_fid.PeriodicFID(config, run.mesh, run.source)
  seq_eval = (
    sequence_eval.SequenceEvaluator(config, run.source) if config.train.eval_every else None
  )
  ckpt = checkpointing.Checkpointer(workdir, config.train.keep_checkpoints)
  # The checks above passed and there are steps to take (a newest checkpoint at num_steps
  # means nothing to do): compile while the state is restored or built.
  if not saved or saved[-1] < config.train.num_steps:
    run.ahead = CompileAhead(run)
  try:
    state = _restore_or_init(run, ckpt)
    step, num_steps = int(state.step), config.train.num_steps
    workdir_lib.check_not_past(workdir, step, num_steps)  # below the saved step: an error
    if step == num_steps and _final_outputs_missing(workdir, step):
      return _write_final_outputs(run, workdir, state)
    if step == num_steps:  # before the writer exists: no second event file, no duplicate images
      if jax.process_index() == 0:
        logging.info(
          "%s already finished: its checkpoint is at step %d and train.num_steps=%d, so there "
          "is nothing to do. To train further, pass a larger --config.train.num_steps.",
          workdir,
          step,
          num_steps,
        )
      return state
    if jax.process_index() == 0:
      resume.record(config, workdir, step, accepted)
    warn_if_schedule_never_adapts(config)
    warn_if_settings_outlast_run(config, step)
    warn_if_two_level_data_mismatches_sigma_data(config, run.source)
    return _loop(run, workdir, ckpt, state, periodic_fid, seq_eval)
  finally:
    ckpt.close()


def _save_pending_before(
  run: Run, ckpt, log: _WindowLogger, pending: _PendingSave | None, error: metrics.NonFiniteError
) -> metrics.NonFiniteError:
  """A NaN or Inf seen while a periodic save still waits for its guard (`_PendingSave.due`):
  if that save's state comes before the bad window, it is checked as always and saved, so the
  error names it as the last good checkpoint instead of dropping it. Returns the error."""
  if pending is None or pending.guard is None or pending.step > error.step_range[0]:
    return error
  try:
    _finish_save(run, ckpt, log, pending)  # its windows and guard are checked first
    ckpt.wait()
  except (metrics.NonFiniteError, checkpointing.CheckpointError):
    return error  # the pending state itself is bad, or could not be saved: the earlier one
  return metrics.non_finite_error(error.metrics, error.step_range, log.last_good())


def _final_outputs_missing(workdir: str, step: int) -> bool:
  """True if a finished run (newest checkpoint at train.num_steps = `step`) lacks its final
  outputs: stopped after the final checkpoint, while sampling or writing them. samples.npz,
  written last, must hold this step. One process only: on a pod the processes could see
  different files and disagree on the collective sampling."""
  return jax.process_count() == 1 and sample_files.samples_step(workdir) != step


def _write_final_outputs(run: Run, workdir: str, state: TrainState) -> TrainState:
  step = int(state.step)
  images = paths.run_path(workdir) / "images"  # gs:// too
  earlier = images.is_dir() and any(
    p.name.startswith("loss_by_log_sigma") for p in images.iterdir()
  )
  logging.warning(
    "%s: the final checkpoint (step %d) is saved but the final samples are not (the run was "
    "stopped while writing them): writing them now. The loss-by-noise and schedule-history "
    "plots are made from the stopped process's training windows and cannot be made again; %s",
    workdir,
    step,
    "their last versions are those of the run's last sample grid (images/, TensorBoard)"
    if earlier
    else "this run wrote no earlier ones (no sample grid before the end, e.g. "
    "train.sample_every=0), so it has none: a rerun with --fresh makes them",
  )
  writer = metrics.create_writer(os.path.join(workdir, "tensorboard"), jax.process_index() > 0)
  try:
    diagnostics.write_final(run, state, writer, workdir, step)
  finally:
    writer.flush()
  return state


class _Trace:
  """A device trace (`jax.profiler`) of steps start+1 .. start+num, written where TensorBoard's
  Profile tab finds it (`<workdir>/tensorboard/plugins/profile/<time>/<host>.xplane.pb`, which
  experiments/benchmarks/trace_gaps.py sums up); start 0 = off. The trace starts once the steps
  already launched have finished, so it holds the traced steps' device work and no earlier
  step's (one drain of the launch queue per trace), and ends once those steps finished on the
  device; a run that stops first ends it on exit. Python calls are traced only with `python`
  (train.trace_python): with jax's Python tracer on, a full-speed window of the fashion U-Net
  on an H200 stretched from 20 to 33 ms per step."""

  def __init__(self, logdir: str, start: int, num: int, python: bool = False):
    self.logdir, self.start, self.stop_after = logdir, start, start + num
    self.python = python
    self.active = False

  def before_step(self, done: int, state) -> None:
    if self.start and done == self.start:
      jax.block_until_ready(state)  # the steps in flight finish outside the trace
      try:  # a trace is a diagnostic: a run never stops for one that cannot start
        options = jax.profiler.ProfileOptions()
        options.python_tracer_level = int(self.python)
        jax.profiler.start_trace(self.logdir, profiler_options=options)
      except Exception as e:  # noqa: BLE001
        logging.warning("Not tracing steps %d..%d: %s", done + 1, self.stop_after, e)
        return
      self.active = True
      logging.info("Tracing steps %d..%d into %s", done + 1, self.stop_after, self.logdir)

  def after_step(self, done: int, state) -> None:
    if self.active and done >= self.stop_after:
      self.close(state)

  def close(self, state=None) -> None:
    """Ends the trace: after `state` is computed when given (the traced steps' device work
    is in it); a failure to end it is a warning, never why a run stops."""
    if not self.active:
      return
    self.active = False
    if state is not None:
      jax.block_until_ready(state)
    try:
      jax.profiler.stop_trace()
    except Exception as e:  # noqa: BLE001
      logging.warning("Could not end the device trace: %s", e)


def _write_final_or_stop(run: Run, state: TrainState, writer, workdir: str, log, preempted) -> None:
  """The final outputs, once the final checkpoint is on disk. With one process (`preempted`,
  the loop's flag) a SIGTERM or Ctrl-C from here on stops at once as a preemption (exit 75):
  the checkpoint is saved and the rerun writes the outputs (_final_outputs_missing). Until
  2026-12-06 the flag swallowed it: the outputs were drawn to the end (a Ctrl-C said it would
  stop "after the current step") and the run exited 0."""
  step = int(state.step)
  if preempted is None:
    diagnostics.write_final(run, state, writer, workdir, step, log)
    return
  if preempted.is_set():  # came after the last step's check, while the final save finished
    raise checkpointing.StoppedOutsideLoop(preempted.by)
  preempted.restore_handlers()  # train_and_evaluate's: a signal raises StoppedOutsideLoop
  try:
    diagnostics.write_final(run, state, writer, workdir, step, log)
  except Exception as e:
    # A SIGTERM while the final samples are drawn (a job's time limit, a preemption) reaches
    # the compiler's subprocesses too, and the sampler's compile fails: the checkpoint is
    # saved, so stop as a preemption instead of failing with the compiler's error.
    by = preempted.by if preempted.is_set() else checkpointing.stopped_by()
    if by is None:
      raise
    logging.warning("the final samples failed after a %s, left to the rerun: %s", by, e)
    raise checkpointing.StoppedOutsideLoop(by) from None


def _loop(run: Run, workdir: str, ckpt, state: TrainState, periodic_fid, seq_eval) -> TrainState:
  """The step loop, from `state` to train.num_steps (or a preemption)."""
  config, t, step = run.config, run.config.train, int(state.step)
  num_steps = t.num_steps
  # One process: our SIGTERM and Ctrl-C flag. Several: JAX's preemption service catches
  # SIGTERM on any of them and Orbax's reached_preemption agrees on one step for all (no local
  # handler, so no process can enter the collective save alone). Installed before anything is
  # written, and the start-up's deferred SIGTERM (one that landed in a garbage-collection
  # callback and could not raise there) is looked at after it, so none falls in between.
  one = jax.process_count() == 1
  preempted = checkpointing.PreemptionFlag(None if one else (), interrupt=one)
  try:
    checkpointing.raise_if_stop_requested()
    if step > 0:  # no step twice in the curves after a resume from an older checkpoint
      workdir_lib.drop_events_after(workdir, step)
    writer = metrics.create_writer(os.path.join(workdir, "tensorboard"), jax.process_index() > 0)
  except BaseException:
    preempted.restore_handlers()
    raise
  if step == 0:
    writer.write_hparams(config.to_dict())
  logging.info(
    "%s | %d params | %d devices x %d processes | steps %d..%d",
    run.source.describe(),
    run.num_params(state),
    jax.device_count(),
    jax.process_count(),
    step,
    num_steps,
  )
  if jax.process_index() == 0:  # where to point TensorBoard while the run goes on
    # the run's own logs: the workdir also holds the logs an earlier attempt moved aside
    # (tensorboard.before-* / after-*), which TensorBoard would show as more runs
    logging.info(  # quoted: a workdir with spaces pastes as one argument
      "TensorBoard: tensorboard --logdir %s", shlex.quote(os.path.join(workdir, "tensorboard"))
    )
  log = _WindowLogger(run, writer, ckpt, step)
  batches = run.device_batches(step, data_workers(config, run.source))
  in_flight = _InFlight(steps_in_flight(run))
  pending: _PendingSave | None = None  # a periodic save waiting for its guard
  failed: list[tuple[str, Exception]] = []  # work between steps that raised (one process)

  def between(work: str, fn, *args) -> None:
    """A sample grid or evaluation between steps (`PreemptionFlag.run_between_steps`). One
    process: an error in it (out of memory, a bad file) saves the step's checkpoint before it
    is raised, as a signal does; it lost every step since the last one. Several processes raise
    at once: a save entered by the failing process alone would hang the others."""
    if failed:
      return
    try:
      preempted.run_between_steps(work, fn, *args)
    except metrics.NonFiniteError:  # the training diverged: handled below, as after any step
      raise
    except Exception as e:
      if not one:
        raise
      failed.append((work, e))

  trace = _Trace(os.path.join(workdir, "tensorboard"), t.trace_start, t.trace_steps, t.trace_python)
  started = time.monotonic()
  try:
    if run.ahead is None:  # not started by _train (its newest checkpoint was unreadable)
      run.ahead = CompileAhead(run)
    train_step = run.ahead.step().program  # compiled or loaded: the loop never traces it
    if one and preempted.is_set():  # during the compile: no step taken, nothing new to save
      raise checkpointing.StoppedOutsideLoop(preempted.by)
    while step < num_steps:
      trace.before_step(step, state)
      waited = time.perf_counter()
      batch = next(batches)
      dispatched = time.perf_counter()
      state, step_metrics = train_step(state, batch)
      returned = time.perf_counter()
      step += 1
      if log.progress.started:
        log.data_wait += dispatched - waited
        log.dispatch += returned - dispatched
      else:  # the windows' clock starts after this step: its compile is in no window
        _first_step_done(run, state, log, started, step)
      trace.after_step(step, state)
      waiting = time.perf_counter()
      in_flight.add(step, step_metrics["loss"])
      log.device_wait += time.perf_counter() - waiting
      ckpt.check_saves()  # a failed background save stops the run here
      log.add(step_metrics)
      if pending is not None and pending.guard is None:  # this step is the guard's probe
        pending.guard = _guard_values(pending.snapshot, step_metrics)
      if step % t.log_every == 0 or step == num_steps:
        log.end_window(step, state)
      # Sample grids and evaluations are timed apart from training (perf/excluded_seconds).
      # A signal (one process) stops them at once, or skips them once it came: the checkpoint
      # below must not wait for them through a preemption's grace period.
      if t.sample_every and step % t.sample_every == 0 and step < num_steps:
        with log.progress.excluded(state):
          # the window ending here (fetched one window late otherwise): the loss-by-noise plot
          # and the schedule history titled with this step show this step's window
          log.flush_through(step)
          work = f"the sample grid of step {step}"
          between(work, diagnostics.write_images, run, state, writer, workdir, step, log)
      if periodic_fid and (step % t.fid_every == 0 or step == num_steps):
        fid_batches = run.sampler.draw(  # lazy; seed set 0: the same noise every time
          state.ema_params, run.sampler.sigmas(state.schedule_state), periodic_fid.num, seed=0
        )
        with log.progress.excluded(state):
          work = f"the periodic FID of step {step}"
          between(work, periodic_fid.write, fid_batches, writer, step)
      if seq_eval and (step % t.eval_every == 0 or step == num_steps):
        draw = functools.partial(run.sampler.draw_ema, state)  # (num, seed) -> samples
        with log.progress.excluded(state):
          between(f"the domain evaluation of step {step}", seq_eval.write, draw, writer, step)
      stop = preempted.is_set() or ckpt.reached_preemption(step) or bool(failed)
      checkpoint = step % t.checkpoint_every == 0 or step == num_steps or stop
      if pending is not None and (step >= pending.due or checkpoint):
        saving = time.monotonic()
        _finish_save(run, ckpt, log, pending)  # saves in order, before any later one
        pending = None
        log.add_checkpoint_time(time.monotonic() - saving)
      if checkpoint and not stop and step < num_steps:
        saving = time.monotonic()
        pending = _start_save(run, log, state, step)  # dispatched only: nothing waits
        log.add_checkpoint_time(time.monotonic() - saving)
      elif checkpoint:  # no next step follows: probe one on a copy, and save now
        jax.block_until_ready(state)  # the steps queued until now are training time
        saving = time.monotonic()
        if stop and log.window is not None:  # a preemption mid-window: its steps are logged
          log.end_window(step, state)
        log.flush(step)  # a NaN state is never saved over a good checkpoint
        writer.flush()  # the windows up to the step are on disk before the step is
        check_before_save(run, train_step, state, step, log.last_good())
        _save(run, ckpt, step, state, log.history)
        log.add_checkpoint_time(time.monotonic() - saving)
      if stop:
        ckpt.wait()
        if failed:
          work, error = failed[0]
          logging.error(
            "%s failed (%s: %s); the checkpoint of step %d is saved: fix the cause and rerun "
            "the same command to go on from it", work, type(error).__name__, error, step,
          )  # fmt: skip
          raise error
        raise checkpointing.Preempted(step, ckpt.directory)
    log.flush(step)
    log.summary()
    ckpt.wait()  # the final checkpoint is on disk before "Finished" is printed
    if step == num_steps:
      _write_final_or_stop(run, state, writer, workdir, log, preempted if one else None)
  except metrics.NonFiniteError as e:
    raise _save_pending_before(run, ckpt, log, pending, e) from None
  finally:
    trace.close()
    gc.unfreeze()  # what the run froze is collectable again (several runs in one process)
    batches.close()
    log.progress.close()
    preempted.restore_handlers()
    writer.flush()
  return state
