"""A thin Orbax wrapper: periodic saves with retention, resume, save-on-preemption.

All processes call every method (Orbax coordinates multi-host saves). The whole
TrainState is one item, so the schedule state and the step (hence the data position)
come back with the parameters.
"""

import json
import os
import signal
import threading
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from infonoise_jax.validation import check_keys


def saved_steps(workdir: str) -> list[int]:
  """Finished checkpoint steps in `<workdir>/checkpoints`, read without creating anything."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


class Checkpointer:
  """Owns `<workdir>/checkpoints`; restores into the shardings of a template state."""

  def __init__(self, workdir: str, keep: int, create: bool = True):
    """`create=False` for readers (sample, evaluate): a missing folder is not made."""
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_meta(self, step: int) -> dict:
    """The JSON metadata saved with `step`, without reading the state."""
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta or {})

  def save(self, step: int, state: Any, meta: dict | None = None, force: bool = False) -> bool:
    """Saves `state` at `step` (skips a step that is already saved)."""
    if step in self._manager.all_steps():
      return False
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})
    )
    saved = self._manager.save(step, args=args, force=force)
    return bool(saved)

  def restore(self, abstract: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores the latest (or given) step into `abstract` (`train_state.abstract_state`).

    A checkpoint written with an older state layout is brought to the current one
    (`_restore_older_layout`).
    """
    step = self._manager.latest_step() if step is None else step
    try:
      return self._restore(step, abstract)
    except ValueError as e:
      return self._restore_older_layout(step, abstract, e)

  def _restore(self, step: int, abstract: Any) -> tuple[Any, dict]:
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    restored = self._manager.restore(step, args=args)
    return restored.state, dict(restored.meta or {})

  def _restore_older_layout(self, step: int, abstract: Any, error: ValueError):
    """Older TrainState layouts, each read and migrated (else the mismatch error):

    * a schedule state without `num_updates` (InfoNoise before `update` stopped taking the
      optimizer step): it was updated once per step, so num_updates = step.
    """
    sched = getattr(abstract, "schedule_state", None)
    if isinstance(sched, dict) and "num_updates" in sched:
      old = abstract.replace(schedule_state={k: v for k, v in sched.items() if k != "num_updates"})
      try:
        state, meta = self._restore(step, old)
      except ValueError:
        pass
      else:
        counter = jax.device_put(state.step, sched["num_updates"].sharding)
        return state.replace(schedule_state={**state.schedule_state, "num_updates": counter}), meta
    raise ValueError(
      f"The checkpoint at {self.directory}/{step} does not match the state this config "
      "builds (a model, schedule or optimizer setting changed since it was saved). Resume "
      "with the config in the workdir's config.json, or start a new --workdir; the "
      f"checkpoint was left untouched. Orbax said: {error}"
    ) from error

  def reached_preemption(self, step: int) -> bool:
    return bool(self._manager.reached_preemption(step))

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class PreemptionFlag:
  """Set by SIGTERM (and SIGINT if asked); the loop polls it, saves and exits cleanly."""

  def __init__(self, signals=(signal.SIGTERM,)):
    self._event = threading.Event()
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self._event.set()

  def is_set(self) -> bool:
    return self._event.is_set()

  def restore_handlers(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _tuples(value):
  """JSON lists -> tuples (config.json stores the config's tuples as lists)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def migrate_config(d: dict, path: str = "config.json") -> dict:
  """Brings a config.json written by an older version to the current keys (in place).

  * `schedule.infonoise.sigma_min/sigma_max` (until the sigma range became the one setting
    `edm.sigma_min/sigma_max`): dropped when equal to the edm range (every run made with the
    defaults); a run whose InfoNoise grid differed from its edm range cannot be expressed
    any more and is an error naming both.
  """
  info, edm = d.get("schedule", {}).get("infonoise", {}), d.get("edm", {})
  for key in ("sigma_min", "sigma_max"):
    if key in info:
      old = info.pop(key)
      if old != edm.get(key):
        raise ValueError(
          f"{path}: schedule.infonoise.{key} = {old} differs from edm.{key} = {edm.get(key)}; "
          "the InfoNoise grid now spans the edm range (one setting), so this run's schedule "
          f"cannot be rebuilt. Set edm.{key} to {old} in {path} to read it on that range."
        )
  return d


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run wrote to `<workdir>/config.json`, migrated to current keys."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} not found: --workdir must be a training run directory (the --workdir given "
      "to python -m infonoise_jax.main)"
    )
  with open(path) as f:
    config = ml_collections.ConfigDict(_tuples(migrate_config(json.load(f), path)))
  check_keys(config)
  return config
