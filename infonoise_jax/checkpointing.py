"""A thin Orbax wrapper: periodic saves with retention, resume, save-on-preemption.

All processes call every method (Orbax coordinates multi-host saves). The whole
TrainState is saved together (packed into one array per dtype by a single process, array by
array by several: `_pack`), so the schedule state and the step (hence the data position)
come back with the parameters.
"""

import contextlib
import functools
import gc
import logging as logging_lib
import os
import re
import signal
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from infonoise_jax import paths, train_state
from infonoise_jax import workdir as workdir_lib


def checkpoint_dir(workdir: str):
  """`<workdir>/checkpoints` (an epath: local or gs://)."""
  return paths.run_path(workdir) / "checkpoints"


def saved_steps(workdir: str) -> list[int]:
  """Finished checkpoint steps in `<workdir>/checkpoints`, read without creating anything."""
  directory = checkpoint_dir(workdir)
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


UNFINISHED_MARK = ".orbax-checkpoint-tmp"  # in the name of a save Orbax has not finalized


def remove_unfinished_saves(directory: str) -> list[str]:
  """Removes the folders of saves that never finished (a process killed mid-save, e.g. when
  SIGTERM's grace period ran out): Orbax finalizes a save by renaming its temporary folder,
  and removes a leftover only when the same step is saved again, which a resume seldom does,
  so each kill would otherwise leave a full-size copy of the state behind. Only the run that
  holds the workdir's lock may call this (a reader could remove a live save). Returns the
  names removed."""
  root = epath.Path(directory)
  if not root.is_dir():
    return []
  removed = []
  for path in sorted(root.iterdir()):
    if UNFINISHED_MARK in path.name:
      if path.is_dir():
        path.rmtree()
      else:
        path.unlink()
      removed.append(path.name)
  if removed:
    logging.warning(
      "Removed %d unfinished checkpoint save(s) left by an earlier attempt that was killed "
      "while saving: %s (in %s)",
      len(removed),
      ", ".join(removed),
      directory,
    )
  return removed


class CheckpointError(RuntimeError):
  """A checkpoint could not be written or read; the message names the folder and the cause."""


class SaveFailedError(CheckpointError):
  pass


# How a collective of several processes reports a peer that is gone (Gloo on CPU hosts, the
# coordination service and NCCL/ICI elsewhere), lower-cased.
PEER_LOST_SIGNS = (
  "gloo",
  "connection reset",
  "connection refused",
  "connection closed",
  "socket closed",
  "coordination service",
  "heartbeat",
  "deadline_exceeded",
  "barrier timed out",
  "task has died",
)


class CorruptCheckpointError(CheckpointError):
  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


def _cause(e: BaseException) -> str:
  """The innermost OSError of an exception chain (the real cause), else `e`, on one line."""
  seen, inner = set(), e
  while inner is not None and id(inner) not in seen:
    seen.add(id(inner))
    if isinstance(inner, OSError) and inner.errno:
      e = inner
      break
    inner = inner.__cause__ or inner.__context__
  if isinstance(e, OSError) and e.errno:
    where = f": {e.filename}" if e.filename else ""
    return f"{os.strerror(e.errno)} [errno {e.errno}]{where}"
  text = " ".join(str(e).split())
  code = _OS_ERROR_CODE.search(text)
  if code:  # tensorstore's (Orbax's array writes): the OS error ends a long message
    n = int(code.group(1))
    return f"{os.strerror(n)} [errno {n}] ({type(e).__name__}: {_clip(text, 200)})"
  return f"{type(e).__name__}: {_clip(text, 300)}"


# tensorstore reports an OS error as a ValueError whose text ends "[os_error_code='28']"
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def _clip(text: str, limit: int) -> str:
  """`text` within about `limit` characters, its start and end kept (a cause is often last)."""
  if len(text) <= limit:
    return text
  half = limit // 2
  return f"{text[:half]} ... {text[-half:]}"


def _path(keys) -> str:
  return jax.tree_util.keystr(keys, simple=True, separator="/")


def _leaf_shapes(tree: Any) -> dict[str, tuple]:
  return {_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


# One process saves its state packed: the leaves copied to the host and concatenated into one
# flat array per dtype ("packed"), with each leaf's path, shape and dtype in flatten order
# ("layout", JSON). Orbax's work per save grows with the number of arrays, not their bytes:
# ~1.6 ms of Python per array on the CPU machines (1,102 arrays in the Fashion U-Net's state:
# ~1.7 s, against ~0.05 s for the same bytes in a few arrays), run on a thread that shares the
# interpreter with the loop launching the steps (docs/design.md). Several processes save each
# array's own shards ("state"); restore reads either.
def _pack(state: Any) -> tuple[dict[str, np.ndarray], dict]:
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  host = jax.device_get([x for _, x in leaves])
  layout, groups = [], {}
  for (path, _), x in zip(leaves, host, strict=True):
    x = np.asarray(x)
    layout.append([_path(path), list(x.shape), x.dtype.name])
    groups.setdefault(x.dtype.name, []).append(x.ravel())
  packed = {dtype: np.concatenate(parts) for dtype, parts in groups.items()}
  return packed, {"leaves": layout}


def _split(packed: dict[str, np.ndarray], layout: dict) -> list[np.ndarray]:
  """The layout's leaves, in order, as views into the packed arrays; ValueError when an array
  is shorter or longer than its leaves."""
  offsets, out = dict.fromkeys(packed, 0), []
  for _, shape, dtype in layout["leaves"]:
    size = int(np.prod(shape, dtype=np.int64))
    flat = packed[dtype][offsets[dtype] : offsets[dtype] + size]
    if flat.size != size:
      raise ValueError(f"the packed {dtype} array is shorter than its layout")
    offsets[dtype] += size
    out.append(np.asarray(flat).reshape(shape))
  if any(offsets[d] != packed[d].size for d in packed):
    raise ValueError("the packed arrays are longer than their layout")
  return out


def _unpack(packed: dict[str, np.ndarray], layout: dict, abstract: Any) -> Any:
  """The packed arrays as the abstract state's leaves, each in its sharding and dtype (cast,
  as Orbax casts an array-by-array restore); ValueError when the layout's paths or shapes are
  not the abstract's."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  if [[_path(p), list(x.shape)] for p, x in leaves] != [l[:2] for l in layout["leaves"]]:
    raise ValueError("the packed checkpoint's leaves are not the state's")
  values = [v.astype(x.dtype) for (_, x), v in zip(leaves, _split(packed, layout), strict=True)]
  out = [
    jax.make_array_from_callback(v.shape, x.sharding, lambda i, v=v: v[i])
    for (_, x), v in zip(leaves, values, strict=True)
  ]
  return jax.tree_util.tree_unflatten(treedef, out)


def _is_packed(step_dir) -> bool:
  """Whether the checkpoint in `step_dir` was saved packed (one process) or array by array."""
  return (epath.Path(step_dir) / "layout").exists()


def read_arrays(workdir: str, step: int) -> dict[str, np.ndarray]:
  """Every leaf of a saved state as a host array by its path ("params/...", "step"), without a
  config or template, whatever wrote it (one process packed, several array by array)."""
  item = checkpoint_dir(workdir) / str(step)
  # Each Orbax checkpointer is closed when read (its threads end here, not at exit).
  if _is_packed(item):
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as json_reader:
      layout = json_reader.restore(item / "layout")
    with ocp.StandardCheckpointer() as reader:
      packed = reader.restore(item / "packed")
    return dict(zip((p for p, _, _ in layout["leaves"]), _split(packed, layout), strict=True))
  with ocp.StandardCheckpointer() as reader:
    tree = reader.metadata(item / "state").item_metadata.tree
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    state = reader.restore(item / "state", shapes)
  return {_path(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(state)[0]}


class _OrbaxErrors(logging_lib.Handler):
  """Keeps the last exception Orbax logged: its save thread logs a failed write and drops
  it (then deletes old steps as if the save had worked), so the cause is taken from here."""

  def __init__(self):
    super().__init__(logging_lib.ERROR)
    self.last: BaseException | None = None

  def emit(self, record: logging_lib.LogRecord) -> None:
    if "/orbax/" in record.pathname and record.exc_info and record.exc_info[1] is not None:
      self.last = record.exc_info[1]


class Checkpointer:
  """Owns `<workdir>/checkpoints`; restores into the shardings of a template state.

  Saves run in the background. A save counts only once its step is finalized on disk:
  `check_saves()` (cheap, every step) raises SaveFailedError as soon as a finished save left
  no step, `wait()` blocks until the last one is on disk. Older steps beyond `keep` are
  deleted only after a newer one is confirmed (Orbax's own retention would delete them even
  when the new save failed).
  """

  def __init__(self, workdir: str, keep: int, create: bool = True):
    """`create=False` for readers (sample, evaluate): a missing folder is not made, and
    unfinished saves are left alone (the trainer, which holds the lock, removes them)."""
    run = paths.run_path(workdir)  # remote URLs (gs://...) kept as they are
    self.workdir = str(run)
    self.directory = str(checkpoint_dir(workdir))
    if create and jax.process_index() == 0:
      remove_unfinished_saves(self.directory)
    self.corrupt_directory = str(run / workdir_lib.CORRUPT_CHECKPOINTS)
    self.keep = keep
    options = ocp.CheckpointManagerOptions(max_to_keep=None, create=create)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._pending: int | None = None  # a save started and not yet confirmed on disk
    # save_in_background: one worker thread runs _save(); every other call that reaches the
    # manager joins it first, or returns while it runs (check_saves, reached_preemption).
    self._saver: ThreadPoolExecutor | None = None
    self._background: Future | None = None
    self._background_step = -1
    self._failed = False
    self._errors = _OrbaxErrors()
    logging_lib.getLogger("absl").addHandler(self._errors)

  def latest_step(self) -> int | None:
    """The newest step saved or being saved (a background save counts once submitted)."""
    latest = self._manager.latest_step()
    if self._background is not None and (latest is None or self._background_step > latest):
      return self._background_step
    return latest

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_meta(self, step: int) -> dict:
    """The JSON metadata saved with `step`, without reading the state."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:
      raise self._corrupt(step, e) from e
    return dict(restored.meta or {})

  # ---------------------------------------------------------------- saving

  def _save_failed(self, step: int, e: BaseException | None) -> SaveFailedError:
    self._failed, self._pending = True, None
    cause = _cause(e) if e is not None else "the save ended without writing the step"
    kept = [s for s in saved_steps(self.workdir) if s != step]
    if jax.process_count() > 1 and any(sign in cause.lower() for sign in PEER_LOST_SIGNS):
      return PeerLostError(
        f"Saving checkpoint step {step} failed because another process of this run is gone "
        f"({cause}); the folder is fine and earlier checkpoints are kept ({kept or 'none'}). "
        f"Restart every process with the same command to resume (exit code "
        f"{PeerLostError.exit_code}, as a preemption)"
      )
    return SaveFailedError(
      f"Saving checkpoint step {step} in {self.directory} failed: {cause}. Earlier "
      f"checkpoints are kept ({kept or 'none'}); fix the folder (space, permissions) and "
      "rerun the same command to resume"
    )

  def _confirm(self, step: int) -> None:
    """Raises unless `step` is finalized on disk; then applies retention."""
    self._pending = None
    self._manager.reload()
    if step not in self._manager.all_steps():
      error = self._errors.last
      try:
        self._manager.check_for_errors()
      except Exception as e:
        error = e
      raise self._save_failed(step, error)
    for old in self.all_steps()[: -self.keep]:
      self._manager.delete(old)

  def save(self, step: int, state: Any, meta: dict | None = None, force: bool = False) -> None:
    """Starts saving `state` at `step` (a step already on disk is left as it is).

    Waits for the previous save first (every process at the same step, so all agree on its
    outcome). Raises SaveFailedError if that one failed, if this one fails to start, or if
    Orbax declines it: a save is never silently skipped.
    """
    self._join_background()
    self._save(step, state, meta, force)

  def save_in_background(
    self, step: int, state: Any, meta: dict | None = None, force: bool = False
  ) -> None:
    """`save` on a worker thread, so Orbax's blocking part (the device-to-host copy, the
    metadata and folders: about 1 s for a 112 MB state on the H200 host) does not hold the
    loop while the device runs only the few steps queued. `state` must not be donated or
    changed afterwards (the loop passes a copy). Its errors surface at the next
    `check_saves`, `wait` or `save`. Several processes: a plain `save` (collective)."""
    if jax.process_count() > 1:
      self.save(step, state, meta, force)
      return
    self._join_background()
    if self._saver is None:
      self._saver = ThreadPoolExecutor(1, thread_name_prefix="checkpoint_save")
    self._background = self._saver.submit(self._save, step, state, meta, force)
    self._background_step = step

  def _join_background(self) -> None:
    """Waits for a background save to have started Orbax's save; raises its error."""
    future, self._background = self._background, None
    if future is not None:
      future.result()

  def _save(self, step: int, state: Any, meta: dict | None, force: bool) -> None:
    self._wait_saved()
    if step in self._manager.all_steps():
      return
    try:
      if jax.process_count() == 1:
        packed, layout = _pack(state)
        items = {"packed": ocp.args.StandardSave(packed), "layout": ocp.args.JsonSave(layout)}
      else:
        items = {"state": ocp.args.StandardSave(state)}
      args = ocp.args.Composite(**items, meta=ocp.args.JsonSave(meta or {}))
      saved = self._manager.save(step, args=args, force=force)
    except Exception as e:
      raise self._save_failed(step, e) from e
    if not saved:
      self._failed = True
      raise SaveFailedError(f"Orbax declined to save step {step} in {self.directory}")
    self._pending = step

  def check_saves(self) -> None:
    """Raises SaveFailedError if the last save has finished without its step (no blocking).

    One process only: with several, each would see its save finish at a different step, and
    retention's delete is a barrier; they agree in `wait()`, which every process calls at the
    same step (before the next save, and at the end).
    """
    if jax.process_count() > 1:
      return
    if self._background is not None:
      if not self._background.done():
        return  # still starting on its thread: checked at a later step
      self._join_background()
    if self._pending is not None and not self._manager.is_saving_in_progress():
      self._confirm(self._pending)

  def wait(self) -> None:
    """Blocks until the last save is on disk; raises SaveFailedError if it is not."""
    self._join_background()
    self._wait_saved()

  def _wait_saved(self) -> None:
    if self._pending is None:
      return
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      self._errors.last = e
    self._confirm(self._pending)

  def close(self) -> None:
    """Waits for the last save (unless one already failed) and releases Orbax's threads."""
    try:
      if not self._failed:
        self.wait()
    finally:
      if self._background is not None:  # a failed run: let the save thread end, quietly
        try:
          self._background.result()
        except Exception:
          pass  # the run's own error is what the user sees
      if self._saver is not None:
        self._saver.shutdown(wait=True)
      if self._failed:  # let Orbax's threads end now, not amid interpreter shutdown
        try:
          self._manager.wait_until_finished()
        except Exception:
          pass  # already reported (SaveFailedError)
      logging_lib.getLogger("absl").removeHandler(self._errors)
      try:
        self._manager.close()
      except Exception:  # the failure was already reported (SaveFailedError)
        if not self._failed:
          raise

  # ---------------------------------------------------------------- restoring

  def _packed(self, step: int) -> bool:
    return _is_packed(os.path.join(self.directory, str(step)))

  def _saved_shapes(self, step: int) -> dict[str, tuple] | None:
    """Leaf path -> shape of the saved state, from its metadata; None if unreadable."""
    try:
      if self._packed(step):
        layout = self._manager.restore(step, args=ocp.args.Composite(layout=ocp.args.JsonRestore()))
        return {path: tuple(shape) for path, shape, _ in layout.layout["leaves"]}
      path = os.path.join(self.directory, str(step), "state")
      metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(path))
      return _leaf_shapes(getattr(metadata, "tree", metadata))
    except Exception:
      return None

  def _corrupt(self, step: int, e: BaseException) -> CorruptCheckpointError:
    return CorruptCheckpointError(
      f"Checkpoint {self.directory}/{step} is corrupt or incomplete ({_cause(e)})", step
    )

  def restore(self, abstract: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores the latest (or given) step into `abstract` (`train_state.abstract_state`).

    A checkpoint written with an older state layout is brought to the current one
    (`_restore_older_layout`). Raises ValueError if the checkpoint holds a different state
    (the config changed) and CorruptCheckpointError if it cannot be read although its layout
    matches, or its metadata is unreadable.
    """
    step = self._manager.latest_step() if step is None else step
    try:
      return self._restore(step, abstract)
    except Exception as e:
      error = e
    migrated = self._restore_older_layout(step, abstract)
    if migrated is not None:
      return migrated
    saved = self._saved_shapes(step)
    if saved is not None and saved != _leaf_shapes(abstract):
      raise ValueError(
        f"The checkpoint at {self.directory}/{step} does not match the state this config "
        "builds (a model, schedule or optimizer setting changed since it was saved). Resume "
        "with the config in the workdir's config.json, or start a new --workdir; the "
        "checkpoint was left untouched"
      ) from error
    raise self._corrupt(step, error) from error

  def _restore(self, step: int, abstract: Any) -> tuple[Any, dict]:
    if self._packed(step):
      args = ocp.args.Composite(
        packed=ocp.args.StandardRestore(),
        layout=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore(),
      )
      restored = self._manager.restore(step, args=args)
      return _unpack(restored.packed, restored.layout, abstract), dict(restored.meta or {})
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    restored = self._manager.restore(step, args=args)
    return restored.state, dict(restored.meta or {})

  def _restore_older_layout(self, step: int, abstract: Any) -> tuple[Any, dict] | None:
    """Other TrainState layouts, each read and brought to `abstract`'s (None: not one of them):

    * the optimizer state in the other layout (`train_state.make_optimizer`: optim.flat_update
      switched, or a checkpoint from before the flat layout): converted
      (`train_state.convert_optimizer_layout`);
    * a schedule state without `num_updates` (InfoNoise before `update` stopped taking the
      optimizer step): it was updated once per step, so num_updates = step.
    """
    layout = train_state.optimizer_layout(abstract) if hasattr(abstract, "opt_state") else None
    other = {"flat": "leafwise", "leafwise": "flat"}.get(layout)
    sched = getattr(abstract, "schedule_state", None)
    no_counter = isinstance(sched, dict) and "num_updates" in sched
    candidates = [(o, c) for o in (None, other) for c in (False, no_counter) if o or c]
    for opt, old_sched in candidates:
      old = abstract
      if old_sched:
        old = old.replace(schedule_state={k: v for k, v in sched.items() if k != "num_updates"})
      if opt:
        old = train_state.convert_optimizer_layout(old, opt)
      try:
        state, meta = self._restore(step, old)
      except Exception:
        continue
      if old_sched:
        # a copy: device_put to the step's own sharding returns the step's buffer, and the
        # train step donates the state (the same buffer donated twice)
        counter = jax.device_put(jnp.copy(state.step), sched["num_updates"].sharding)
        state = state.replace(schedule_state={**state.schedule_state, "num_updates": counter})
      if opt:
        shardings = jax.tree.map(lambda a: a.sharding, abstract)
        convert = functools.partial(train_state.convert_optimizer_layout, layout=layout)
        state = jax.jit(convert, out_shardings=shardings)(state)
      return state, meta
    return None

  def _move_aside(self, step: int) -> str:
    """Moves a corrupt step out of the checkpoint folder (never deletes it)."""
    corrupt = epath.Path(self.corrupt_directory)  # local or remote (gs://)
    dest = corrupt / str(step)
    if jax.process_index() == 0:
      corrupt.mkdir(parents=True, exist_ok=True)
      suffix = 0
      while dest.exists():
        suffix += 1
        dest = corrupt / f"{step}.{suffix}"
      (epath.Path(self.directory) / str(step)).rename(dest)
    dest = str(dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
    self._manager.reload()
    return dest

  def restore_newest_good(self, abstract: Any) -> tuple[Any, dict] | None:
    """Restores the newest readable step; corrupt newer ones are moved to checkpoints_corrupt/.

    Returns None when there is no checkpoint; raises CorruptCheckpointError when none of the
    saved steps can be read (all were moved aside).
    """
    steps = self.all_steps()
    for step in reversed(steps):
      try:
        return self.restore(abstract, step)
      except CorruptCheckpointError as e:
        dest = self._move_aside(step)
        logging.warning("%s: moved it to %s; trying the previous checkpoint.", e, dest)
    if steps:
      raise CorruptCheckpointError(
        f"No readable checkpoint in {self.directory}: steps {steps} are all corrupt (moved to "
        f"{self.corrupt_directory}); restore them from a backup, or start a new --workdir",
        steps[-1],
      )
    return None

  def reached_preemption(self, step: int) -> bool:
    if self._background is not None and not self._background.done():
      return False  # one process (no background saves on several): SIGTERM is our own flag
    return bool(self._manager.reached_preemption(step))


PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: saved and stopped early; requeue the same command


class PeerLostError(SaveFailedError):
  """A save of a run of several processes failed because another process of the run is gone
  (a lost host: its collective connection reset, timed out or refused): nothing is wrong with
  the folder, and the run is to be requeued like a preemption."""

  exit_code = PREEMPTED_EXIT_CODE


class Preempted(Exception):
  """The run saved a checkpoint on a preemption signal and stopped before num_steps."""

  exit_code = PREEMPTED_EXIT_CODE

  def __init__(self, step: int, directory: str):
    super().__init__(
      f"Preempted: checkpoint of step {step} saved in {directory}; rerun the same command to "
      f"resume (exit code {PREEMPTED_EXIT_CODE})"
    )
    self.step = step


class StoppedOutsideLoop(BaseException):
  """SIGTERM before the step loop began (loading data, restoring, compiling) or after it ended:
  there is no new step to save, and what was saved is intact; requeue the same command. A
  BaseException, like KeyboardInterrupt, since it is raised wherever the main thread is: no
  `except Exception` on the way (a restore that would call the step corrupt, a reader that
  would call the file bad) may take it for an error of its own."""

  exit_code = PREEMPTED_EXIT_CODE

  def __init__(self, by: str = "SIGTERM"):
    super().__init__(
      f"Stopped by {by} outside the training steps (start-up or shutdown): nothing new to save, "
      f"the saved checkpoints are intact; rerun the same command (exit code {PREEMPTED_EXIT_CODE})"
    )


_SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}


@contextlib.contextmanager
def sigterm_stops_outside_loop(active: bool = True):
  """While active (one process, main thread): SIGTERM, or a first Ctrl-C (SIGINT), raises
  StoppedOutsideLoop, so the caller's cleanup runs (the workdir's lock is released) and the
  process exits with the preemption code instead of being killed (143) or printing a
  KeyboardInterrupt traceback (130); a second Ctrl-C stops at once (KeyboardInterrupt). The
  step loop's PreemptionFlag takes both signals over meanwhile."""
  if not active or threading.current_thread() is not threading.main_thread():
    yield
    return

  def stop(signum, frame):
    if signum == signal.SIGINT and _STOP_REQUESTED.is_set():
      raise KeyboardInterrupt
    _STOP_REQUESTED.set()
    _STOPPED_BY[0] = _SIGNAL_NAMES.get(signum, "SIGTERM")
    if not _in_finalizer(frame):
      raise StoppedOutsideLoop(_STOPPED_BY[0])
    # An exception raised inside a garbage-collection callback or __del__ is printed and dropped
    # by Python (jax frees device buffers from one: a SIGTERM during compile was lost and the
    # run trained on; one run then segfaulted). The flag stops the run at the next check point
    # instead: `raise_if_stop_requested`, called before the step loop starts.

  _STOP_REQUESTED.clear()
  previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield
  finally:
    for sig, handler in previous.items():
      if handler is not None:  # None: a handler installed from C, which cannot be put back
        signal.signal(sig, handler)


_STOP_REQUESTED = threading.Event()  # a SIGTERM came outside the loop (sigterm_stops_outside_loop)
_STOPPED_BY = ["SIGTERM"]  # which signal set it, for the message


def _in_finalizer(frame) -> bool:
  """True when `frame` (where a signal handler interrupted the main thread) runs inside a
  garbage-collection callback or a __del__, where Python drops a raised exception."""
  callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
  while frame is not None:
    if frame.f_code.co_name == "__del__" or frame.f_code in callbacks:
      return True
    frame = frame.f_back
  return False


def stopped_by() -> str | None:
  """The signal that came outside the loop ("SIGTERM", "Ctrl-C"), or None if none did."""
  return _STOPPED_BY[0] if _STOP_REQUESTED.is_set() else None


def raise_if_stop_requested() -> None:
  """Raises StoppedOutsideLoop if a SIGTERM came outside the loop and could not be raised where
  it landed (inside a garbage-collection callback); the loop calls it before its first step."""
  if _STOP_REQUESTED.is_set():
    raise StoppedOutsideLoop(_STOPPED_BY[0])


class _WorkInterrupted(Exception):
  """Raised by a signal handler inside `PreemptionFlag.run_between_steps` to stop that work."""


class PreemptionFlag:
  """Set by SIGTERM (or the given `signals`); the loop polls it, saves and exits cleanly.

  `interrupt=True` also takes Ctrl-C (SIGINT) that way: the first one saves a checkpoint at
  the next step and stops, as a preemption does; a second one stops at once, unsaved
  (KeyboardInterrupt), for a save that hangs."""

  def __init__(self, signals=None, interrupt: bool = False):
    signals = (signal.SIGTERM,) if signals is None else signals
    self._event = threading.Event()
    self._previous = {}
    self._work = None  # what `run_between_steps` runs now: a signal stops it at once
    self.by = "SIGTERM"  # the signal that set the flag, for the message
    if threading.current_thread() is threading.main_thread():
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)
      if interrupt:
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._interrupt)

  def _handle(self, signum, frame):
    del frame
    self.by = _SIGNAL_NAMES.get(signum, "SIGTERM")
    self._event.set()
    if self._work is not None:
      raise _WorkInterrupted

  def _interrupt(self, signum, frame):
    del frame
    if self._event.is_set():
      raise KeyboardInterrupt
    self.by = "Ctrl-C"
    self._event.set()
    now = f"{self._work} stopped, " if self._work is not None else ""
    print(
      f"\nCtrl-C: {now}stopping after the current step with a checkpoint of it (before the "
      "first step: at once, nothing new to save); Ctrl-C again stops at once, without saving.",
      file=sys.stderr,
      flush=True,
    )
    if self._work is not None:
      raise _WorkInterrupted

  def run_between_steps(self, work: str, fn, *args) -> None:
    """Runs `fn(*args)`, named `work` (e.g. "the sample grid of step 2000"), so that a signal
    setting the flag stops it at once, with a warning, instead of after it, and not at all once
    the flag is set: a long sample grid or evaluation between steps must not outlast a
    preemption's grace period before the checkpoint. The caller then saves and stops as after
    any signal."""
    if self.is_set():
      return
    self._work = work
    try:
      fn(*args)
    except _WorkInterrupted:
      logging.warning("%s stopped by %s: left out, saving the checkpoint", work, self.by)
    finally:
      self._work = None

  def is_set(self) -> bool:
    return self._event.is_set()

  def restore_handlers(self) -> None:
    for sig, handler in self._previous.items():
      if handler is not None:  # None: installed from C, cannot be put back
        signal.signal(sig, handler)
