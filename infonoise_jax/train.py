"""Training orchestration: mesh, state, data, writers, checkpoints, the loop.

Library logic lives elsewhere (steps.py, schedules/, models/, data/); this module only
wires it together. Resume order: build the template state (shardings known), restore
the latest checkpoint into it if one exists, then continue the data stream at the
restored step (the pipeline is a pure function of the step).
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from infonoise_jax import checkpointing, diagnostics, metrics, steps
from infonoise_jax.data import Pipeline, load_source
from infonoise_jax.models import make_model
from infonoise_jax.schedules import make_schedule
from infonoise_jax.train_state import TrainState, make_optimizer
from infonoise_jax.validation import validate_config


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh(
    (len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
  )


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


class Run:
  """Everything built once before the loop starts (validated before any compile)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, devices=None):
    validate_config(config, None if devices is None else len(devices))
    self.config = config
    self.workdir = workdir
    self.source = load_source(config)
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
    )
    abstract = jax.eval_shape(self._init)
    self.state_sharding = jax.tree.map(lambda _: self.replicated, abstract)
    self.init_fn = jax.jit(self._init, out_shardings=self.state_sharding)
    self.train_step = jax.jit(
      steps.make_train_step(config, self.model, self.schedule, self.optimizer),
      in_shardings=(self.state_sharding, self.batch_sharding),
      out_shardings=(self.state_sharding, self.replicated),
      donate_argnums=0,
    )

  def _init(self) -> TrainState:
    return steps.init_state(
      self.config, self.model, self.schedule, self.optimizer, self.source.shape, self.config.seed
    )

  def global_batch(self, local_BX: np.ndarray) -> jax.Array:
    shape = (self.config.train.batch_size, *local_BX.shape[1:])
    return jax.make_array_from_process_local_data(self.batch_sharding, local_BX, shape)

  def num_params(self, state: TrainState) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))


@jax.jit
def _accumulate(acc: dict, new: dict) -> dict:
  """Sums a step's metrics into the window (the last sigma batch is kept as is)."""
  out = jax.tree.map(
    jnp.add,
    {k: v for k, v in acc.items() if k != "sigma"},
    {k: v for k, v in new.items() if k != "sigma"},
  )
  out["sigma"] = new["sigma"]
  return out


def _restore_or_init(run: Run, ckpt: checkpointing.Checkpointer) -> TrainState:
  state = run.init_fn()
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    logging.info("Resumed from %s at step %d (%s)", ckpt.directory, int(state.step), meta)
  return state


def _log_window(run: Run, writer, window, step_range, ckpt, progress) -> None:
  """Fetches a finished window's metrics (one window late), checks them and writes them."""
  host = jax.device_get(window)
  last_good = ckpt.latest_step()
  metrics.check_finite(
    {k: v for k, v in host.items() if k != "sigma"},
    step_range,
    f"{ckpt.directory} (step {last_good})" if last_good is not None else "none saved yet",
  )
  scalars = diagnostics.window_scalars(run.config, host, step_range)
  scalars.update(progress.update(step_range[1], time.time()))
  writer.write_scalars(step_range[1], scalars)
  writer.write_histograms(step_range[1], {"sigma/log_sigma": np.log(host["sigma"])})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, devices=None) -> TrainState:
  """Trains from scratch or resumes from `workdir`; returns the final state."""
  run = Run(config, workdir, devices)
  write_config(config, workdir)
  writer = metrics.create_writer(os.path.join(workdir, "tensorboard"), jax.process_index() > 0)
  ckpt = checkpointing.Checkpointer(workdir, config.train.keep_checkpoints)
  state = _restore_or_init(run, ckpt)
  start = int(state.step)
  num_steps = config.train.num_steps
  logging.info(
    "%s | %d params | %d devices x %d processes | steps %d..%d",
    run.source.describe(),
    run.num_params(state),
    jax.device_count(),
    jax.process_count(),
    start,
    num_steps,
  )
  progress = metrics.ProgressReporter(num_steps, config.train.batch_size, start, time.time())
  preempted = checkpointing.PreemptionFlag()
  window, pending, window_start = None, None, start
  batches = run.pipeline.iterate(start)
  step = start
  try:
    while step < num_steps:
      state, step_metrics = run.train_step(state, run.global_batch(next(batches)))
      step += 1
      window = step_metrics if window is None else _accumulate(window, step_metrics)
      if step % config.train.log_every == 0 or step == num_steps:
        if pending is not None:
          _log_window(run, writer, *pending, ckpt, progress)
        pending, window, window_start = (window, (window_start, step)), None, step
      if config.train.sample_every and step % config.train.sample_every == 0 and step < num_steps:
        diagnostics.write_images(run, state, writer, workdir, step)
      stop = preempted.is_set() or ckpt.reached_preemption(step)
      if step % config.train.checkpoint_every == 0 or step == num_steps or stop:
        _save(run, ckpt, state, step, pending, window, window_start)
      if stop:
        logging.warning("Preemption signal at step %d: checkpoint saved, exiting.", step)
        break
    if pending is not None:
      _log_window(run, writer, *pending, ckpt, progress)
    if step == num_steps:
      diagnostics.write_final(run, state, writer, workdir, step)
  finally:
    preempted.restore_handlers()
    ckpt.close()
    writer.flush()
  return state


def _save(run, ckpt, state, step, pending, window, window_start) -> None:
  """Checks the unlogged metrics before saving, so a NaN state never overwrites a good one."""
  unchecked = [pending] if pending is not None else []
  if window is not None:
    unchecked.append((window, (window_start, step)))
  last = ckpt.latest_step()
  where = f"{ckpt.directory} (step {last})" if last is not None else "none saved yet"
  for win, step_range in unchecked:
    host = jax.device_get({k: win[k] for k in ("loss", "grad_norm")})
    metrics.check_finite(host, step_range, where)
  meta = {"step": step, "config": json.loads(run.config.to_json_best_effort())}
  ckpt.save(step, state, meta=meta, force=True)
