"""Reading a training run back from its workdir: config.json (migrated to the current keys)
and a checkpoint restored into the state the config builds, without reading any data.

Used by the sample, evaluate and diagnose commands and by resume's config comparison; the
checkpoint itself is read through `checkpointing.Checkpointer`.
"""

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from infonoise_jax import paths, steps
from infonoise_jax.checkpointing import (
  Checkpointer,
  CorruptCheckpointError,
  checkpoint_dir,
  saved_steps,
)
from infonoise_jax.data.sources import data_location_items, resolve_data_paths
from infonoise_jax.mesh import make_mesh
from infonoise_jax.models import make_model
from infonoise_jax.schedules import Schedule, make_schedule
from infonoise_jax.train_state import TrainState, abstract_state, make_optimizer
from infonoise_jax.validation import apply_overrides, config_from_json


def load_config(workdir: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The resolved config a run wrote to `<workdir>/config.json`, migrated to current keys,
  with the data-location items of `overrides` applied (DATA_LOCATION_KEYS, made absolute:
  where the run's data lies now); their other items are the caller's to check."""
  path = paths.run_path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(
      f"{path} not found: --workdir must be a training run directory (the --workdir given "
      "to python -m infonoise_jax.main)"
    )
  config = config_from_json(path)
  moved = data_location_items(overrides or ())
  if moved:
    apply_overrides(config, moved)
    resolve_data_paths(config)
  return config


class RestoredRun(NamedTuple):
  """A training run read back from its workdir: what sampling and evaluation build on."""

  config: ml_collections.ConfigDict
  model: nn.Module
  schedule: Schedule
  mesh: jax.sharding.Mesh
  data_shape: tuple[int, ...]  # one example, from the checkpoint's meta (no data is read)
  state: TrainState  # replicated over the mesh
  step: int
  meta: dict


def _no_checkpoint(directory: str) -> FileNotFoundError:
  return FileNotFoundError(
    f"No checkpoint in {directory}: train the run first "
    "(python -m infonoise_jax.main --workdir=...) or point --workdir at a trained run"
  )


def check_step(workdir: str, step: int | None = None) -> int:
  """The step to restore (latest if None), checked from the folder without reading it."""
  saved = saved_steps(workdir)
  if not saved:
    raise _no_checkpoint(str(checkpoint_dir(workdir)))
  if step is None:
    return saved[-1]
  if step not in saved:
    raise ValueError(f"--step={step}: no such checkpoint in {workdir}/checkpoints; saved: {saved}")
  return step


def saved_meta(workdir: str, step: int | None = None) -> dict:
  """The metadata saved with the checkpoint at `step` (latest if None); no state is read."""
  step = check_step(workdir, step)
  ckpt = Checkpointer(workdir, 1, create=False)
  try:
    return ckpt.restore_meta(step)
  finally:
    ckpt.close()


def saved_data_shape(workdir: str, step: int | None = None) -> tuple[int, ...]:
  """One example's shape, from the metadata saved with the checkpoint (no state is read)."""
  return tuple(int(d) for d in saved_meta(workdir, step)["data_shape"])


def check_data_shape(workdir: str, config, shape, saved) -> None:
  """The data a trained run's command reads (its own, or where --set data.path=... says it now
  lies) must give examples of the shape the run trained on (`saved`, from its checkpoint's
  metadata): other data would be scored or diagnosed against a model it does not fit (or
  fail deep inside the model)."""
  saved, shape = tuple(int(d) for d in saved), tuple(int(d) for d in shape)
  if saved != shape:
    d = config.data
    raise ValueError(
      f"data.name={d.name!r} with data.path={d.path!r} gives examples of shape {shape}, but "
      f"{workdir} was trained on examples of shape {saved}: point --set data.path at the "
      "run's own data (where it lies now)"
    )


def _pick_step(ckpt: Checkpointer, step: int | None) -> int:
  saved = ckpt.all_steps()
  if not saved:
    raise _no_checkpoint(ckpt.directory)
  if step is None:
    return saved[-1]
  if step not in saved:
    raise ValueError(f"--step={step}: no such checkpoint in {ckpt.directory}; saved steps: {saved}")
  return step


def restore_run(
  workdir: str, step: int | None = None, devices: Sequence[jax.Device] | None = None
) -> RestoredRun:
  """Rebuilds a run from `<workdir>/config.json` and restores its latest (or given) checkpoint,
  replicated over `devices` (default: all), without reading the training data."""
  config = load_config(workdir)
  if not checkpoint_dir(workdir).is_dir():
    raise _no_checkpoint(str(checkpoint_dir(workdir)))
  ckpt = Checkpointer(workdir, config.train.keep_checkpoints, create=False)
  try:
    step = _pick_step(ckpt, step)
    meta = ckpt.restore_meta(step)
    data_shape = tuple(int(d) for d in meta["data_shape"])
    mesh = make_mesh(devices)
    model, schedule = make_model(config, data_shape), make_schedule(config)
    optimizer = make_optimizer(config)
    init = lambda: steps.init_state(model, schedule, optimizer, data_shape, config.seed)
    state, meta = ckpt.restore(abstract_state(init, NamedSharding(mesh, P())), step)
  except CorruptCheckpointError as e:  # the trainer falls back by itself; a command is told how
    others = [s for s in ckpt.all_steps() if s != e.step]
    hint = (
      f"; the other saved steps are {others}: --step={others[-1]} uses the newest of them"
      if others
      else "; no other checkpoint is saved"
    )
    raise CorruptCheckpointError(f"{e}{hint}", e.step) from e
  finally:
    ckpt.close()
  return RestoredRun(config, model, schedule, mesh, data_shape, state, step, meta)
