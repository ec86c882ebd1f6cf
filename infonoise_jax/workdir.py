"""One run per workdir, and the workdir states a run must not start in (docs/reliability.md).

The lock is `<workdir>/run.lock`, a JSON file naming its holder (host, pid, start time) and
its heartbeat (a time the holder rewrites every HEARTBEAT_S from a thread of its own),
created exclusively (O_EXCL) by process 0 before anything is written and removed when the
run ends. A second run on the same workdir is refused with the holder's name. A lock is
stale, and taken over with a warning, when its pid no longer runs on this host, or when its
heartbeat is older than STALE_AFTER_S: a run killed outright (SIGKILL, out of memory, a lost
VM) on another host or on `gs://`, where no pid can be checked, so that re-running the same
command after a hard preemption resumes instead of waiting for someone to remove the file.
A lock written without a heartbeat (by older code) is stale only by its pid. On `gs://`
(and other object stores) creation is check-then-write, not atomic: two runs started within
the same second can both proceed.
"""

import contextlib
import datetime
import errno
import json
import os
import socket
import struct
import tempfile
import threading
import time

import jax
import numpy as np
from absl import logging
from etils import epath

from infonoise_jax.paths import is_remote, run_path

LOCK_FILE = "run.lock"
HEARTBEAT_S = 60.0  # how often the holder rewrites its lock's heartbeat
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
STALE_AFTER_S = 600.0  # a heartbeat this old means the holder is gone (10 missed beats)
TENSORBOARD = "tensorboard"
CORRUPT_CHECKPOINTS = "checkpoints_corrupt"  # unreadable steps, moved aside (checkpointing.py)


class WorkdirError(ValueError):
  """The workdir is in a state a run must not start in; the message says what to do."""


class WorkdirLockedError(WorkdirError):
  """Another run holds the workdir's lock."""


def check_is_directory(workdir: str) -> None:
  """Raises if `workdir` exists and is not a directory, or does not exist and cannot be made
  (checked by making and removing a folder beside where it would go), before any data is
  loaded."""
  if is_remote(workdir):
    return
  target = parent = str(run_path(workdir))  # where the run writes ('~' expanded, absolute)
  if os.path.exists(target) and not os.path.isdir(target):
    raise WorkdirError(
      f"--workdir={workdir} is a file, not a directory; point --workdir at a new or existing "
      "run directory"
    )
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if parent == target:  # it exists: a directory, checked above
    return
  if not os.path.isdir(parent):  # e.g. --workdir=runs/config.json/sub
    raise WorkdirError(
      f"--workdir={workdir} cannot be made: {parent} on its path is a file, not a folder; "
      "point --workdir at a path whose existing part is folders"
    )
  try:
    os.rmdir(tempfile.mkdtemp(prefix=".infonoise-probe-", dir=parent))
  except OSError as e:
    raise WorkdirError(
      f"--workdir={workdir} cannot be made: its nearest existing folder {parent} does not take "
      f"new folders ({e.strerror or e}); point --workdir at a folder you can write"
    ) from e


def check_outside_data(workdir: str, data_path: str, flag: str = "--workdir") -> None:
  """Raises if `workdir` (an output folder, given as `flag`) lies inside the data folder
  `data_path`: data folders are read with their subfolders, so the run's own sample grids,
  texts and checkpoints would become training data (a resume then failed on the run's grid
  image as 'an image of another size')."""
  if not data_path or is_remote(workdir) or is_remote(data_path) or not os.path.isdir(data_path):
    return
  data = os.path.realpath(os.path.expanduser(data_path))
  work = os.path.realpath(os.path.expanduser(workdir))
  if os.path.commonpath([data, work]) == data:
    raise WorkdirError(
      f"{flag}={workdir} lies inside the data folder data.path={data_path}: folders are read "
      "with their subfolders, so the samples, logs and checkpoints written there would be read "
      f"as training data. Put {flag} outside the data folder"
    )


def _files(folder: epath.Path) -> list[epath.Path]:
  """The files under `folder`, at any depth (through iterdir: epath's walk drops the scheme
  of the remote folders it finds)."""
  found = []
  for path in sorted(folder.iterdir()) if folder.is_dir() else []:
    found += _files(path) if path.is_dir() else [path]
  return found


def _event_files(workdir: str) -> list[epath.Path]:
  """The TensorBoard event files under `<workdir>/tensorboard` (any depth; local or remote)."""
  files = _files(run_path(workdir) / TENSORBOARD)
  return [p for p in files if p.name.startswith("events.out.tfevents")]


def has_event_files(workdir: str) -> bool:
  """True if `<workdir>/tensorboard` holds TensorBoard event files (at any depth)."""
  return bool(_event_files(workdir))


def _aside(workdir: str, tag: str) -> epath.Path:
  """`<workdir>/tensorboard.<tag>-<UTC time>`: where logs a run must not show are moved."""
  stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
  return run_path(workdir) / f"{TENSORBOARD}.{tag}-{stamp}"


def _move(src: epath.Path, dst: epath.Path) -> None:
  """Moves one file: a rename on local disks; a copy, then a delete, on object stores (which
  cannot rename, and whose folders exist only through the objects in them)."""
  if is_remote(src):
    dst.write_bytes(src.read_bytes())
    src.unlink()
  else:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dst)


def check_start(
  workdir: str, saved_steps: list[int], fresh: bool, earlier_attempt: bool = False
) -> None:
  """Refuses to start at step 0 into another run's logs; `fresh` moves them aside instead.

  `earlier_attempt`: the logs are this run's own (its config.json holds the same settings)
  from an attempt that stopped before its first checkpoint (killed, OOM, preempted during
  start-up): the requeued command starts over, moving them aside as `fresh` does."""
  if saved_steps:
    if fresh:
      raise WorkdirError(
        f"--fresh starts over only a workdir without checkpoints, and {workdir} has steps "
        f"{saved_steps}: drop --fresh to resume, or use a new --workdir"
      )
    return
  if not has_event_files(workdir):
    return
  logs = os.path.join(workdir, TENSORBOARD)
  lost = _lost_checkpoints(workdir) if earlier_attempt and not fresh else None
  if lost:  # this run's logs, but not from an attempt that stopped before its first checkpoint
    raise WorkdirError(
      f"{workdir} has no readable checkpoint, but {lost}: starting over at step 0 would "
      "throw that training away. Restore the checkpoints from a backup to resume; pass --fresh "
      "to start over (the old logs moved aside), or use a new --workdir"
    )
  if not fresh and not earlier_attempt:
    raise WorkdirError(
      f"{workdir} has TensorBoard logs ({logs}) but no checkpoint: starting again at step 0 "
      "would interleave two runs' curves. Pass --fresh to move the old logs aside and start "
      "over, or use a new --workdir"
    )
  aside = _aside(workdir, "before")
  if jax.process_index() == 0:
    if is_remote(workdir):  # file by file: object stores have no folders to rename
      root = run_path(logs)
      for path in _files(root):
        _move(path, aside / path.relative_to(root))
    else:
      os.rename(logs, aside)
  if fresh:
    logging.warning("--fresh: moved the previous run's TensorBoard logs to %s", aside)
  else:
    logging.warning(
      "%s: an earlier attempt of this run (same config.json) stopped before its first "
      "checkpoint; starting over at step 0, its TensorBoard logs moved to %s",
      workdir,
      aside,
    )


def _lost_checkpoints(workdir: str) -> str | None:
  """What shows that a workdir without checkpoints had some (as words), or None: steps moved
  aside as unreadable, or the final samples of a finished run (its checkpoints deleted)."""
  corrupt = run_path(workdir) / CORRUPT_CHECKPOINTS
  moved = sorted(p.name for p in corrupt.iterdir()) if corrupt.is_dir() else []
  if moved:
    return f"{corrupt} holds steps {moved}, moved aside as unreadable"
  if (run_path(workdir) / "samples.npz").exists():
    return "its samples.npz shows it trained to the end (its checkpoints were removed)"
  return None


def _records(data: bytes) -> list[bytes]:
  """The records of a TFRecord file (TensorBoard's event files): each is an 8-byte
  little-endian length, its 4-byte checksum, the data and the data's checksum. A torn last
  record (a process killed mid-write) and anything after a length whose checksum fails are
  left out, as TensorBoard's reader stops there."""
  from tensorboardX.record_writer import masked_crc32c

  records, at = [], 0
  while at + 12 <= len(data):
    (length,) = struct.unpack("<Q", data[at : at + 8])
    (check,) = struct.unpack("<I", data[at + 8 : at + 12])
    end = at + 12 + length + 4
    if check != masked_crc32c(data[at : at + 8]) or end > len(data):
      break
    records.append(data[at + 12 : at + 12 + length])
    at = end
  return records


def _framed(record: bytes) -> bytes:
  """One record in the TFRecord framing `_records` reads."""
  from tensorboardX.record_writer import masked_crc32c

  header = struct.pack("<Q", len(record))
  return (
    header
    + struct.pack("<I", masked_crc32c(header))
    + record
    + struct.pack("<I", masked_crc32c(record))
  )


def drop_events_after(workdir: str, step: int) -> str | None:
  """Resuming at `step`: takes out of the TensorBoard logs what an earlier attempt logged after
  that step (it was killed after its last checkpoint, or that checkpoint was corrupt), which
  would otherwise show twice, as a zig-zag, once this run logs those steps again.

  Each event file holding such events is rewritten without them; the original is moved, never
  deleted, to `<workdir>/tensorboard.after-<step>-<UTC>/`, which is returned (None if nothing
  was after `step`). Local or remote (gs://) log folders; process 0 only."""
  if jax.process_index() != 0:
    return None
  from tensorboard.compat.proto import event_pb2

  root = run_path(workdir) / TENSORBOARD
  aside = None
  for path in _event_files(workdir):
    records = _records(path.read_bytes())
    kept = [r for r in records if event_pb2.Event.FromString(r).step <= step]
    if len(kept) == len(records):
      continue
    if aside is None:
      aside = _aside(workdir, f"after-{step}")
    _move(path, aside / path.relative_to(root))
    path.write_bytes(b"".join(_framed(r) for r in kept))
  if aside:
    logging.warning(
      "Resuming at step %d: an earlier attempt had logged steps after it; those events are "
      "taken out of the TensorBoard logs (the original event files are in %s)",
      step,
      aside,
    )
  return None if aside is None else str(aside)


def check_not_past(workdir: str, step: int, num_steps: int) -> None:
  if step > num_steps:
    raise WorkdirError(
      f"{workdir} is already at step {step}, past train.num_steps={num_steps}: nothing to "
      f"train. Raise --config.train.num_steps above {step} to continue it"
    )


def _holder() -> dict:
  now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
  return {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "beat": time.time()}


def _same_holder(a: dict | None, b: dict | None) -> bool:
  """One run's lock whatever its heartbeat says."""
  keys = ("host", "pid", "started")
  return a is not None and b is not None and all(a.get(k) == b.get(k) for k in keys)


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


class Lock:
  """`with Lock(workdir):` holds the workdir for one run (see the module docstring)."""

  def __init__(
    self, workdir: str, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S
  ):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self.heartbeat_s = heartbeat_s
    self.stale_after_s = stale_after_s
    self._mine: dict | None = None
    self._io = threading.Lock()  # the heartbeat's rewrite against release
    self._stop = threading.Event()
    self._beater: threading.Thread | None = None

  def _describe(self, holder: dict | None) -> str:
    if not holder:
      return f"an unreadable lock file {self.path}"
    text = f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('started')}"
    age = self._beat_age(holder)
    if age is not None:
      text += f"; heartbeat {age:.0f} s ago"
    return text + ")"

  @staticmethod
  def _beat_age(holder: dict | None) -> float | None:
    beat = (holder or {}).get("beat")
    if isinstance(beat, int | float) and not isinstance(beat, bool):
      return max(0.0, time.time() - beat)
    return None

  def _stale(self, holder: dict | None) -> str | None:
    """Why `holder`'s lock is stale, or None if it may still be held."""
    if holder is None:
      return None
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
      return "its process no longer runs on this host"
    age = self._beat_age(holder)
    if age is not None and age > self.stale_after_s:
      return (
        f"its heartbeat stopped {age:.0f} s ago (a live run renews it every {self.heartbeat_s:g} s)"
      )
    return None

  def _read(self) -> dict | None:
    try:
      if is_remote(self.path):
        return json.loads(epath.Path(self.path).read_text())
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def _refuse(self, holder: dict | None) -> WorkdirLockedError:
    after = ""
    if self._beat_age(holder) is not None:
      after = (
        f" (a lock is taken over by itself once its heartbeat is {self.stale_after_s:.0f} s old)"
      )
    return WorkdirLockedError(
      f"{self.workdir} is in use by another run: {self._describe(holder)}. Wait for it to "
      f"end, use another --workdir, or, if that run is gone, remove {self.path}{after}"
    )

  def _take_over(self, holder: dict | None, why: str) -> None:
    logging.warning(
      "Taking over the stale lock of %s (%s): %s", self._describe(holder), self.path, why
    )

  def _write(self, holder: dict) -> None:
    """Replaces the lock file's content at once (a reader never sees it half written)."""
    if is_remote(self.path):
      epath.Path(self.path).write_text(json.dumps(holder))
      return
    fd, tmp = tempfile.mkstemp(prefix=".run.lock.", dir=os.path.dirname(self.path) or ".")
    try:
      with os.fdopen(fd, "w") as f:
        json.dump(holder, f)
      os.replace(tmp, self.path)
    except BaseException:
      with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
      raise

  def _acquire_remote(self) -> None:
    path = epath.Path(self.path)
    if path.exists():
      holder = self._read()
      why = self._stale(holder)
      if why is None:
        raise self._refuse(holder)
      self._take_over(holder, why)
    path.parent.mkdir(parents=True, exist_ok=True)
    self._mine = _holder()
    path.write_text(json.dumps(self._mine))

  def _not_writable(self, e: OSError) -> WorkdirError:
    return WorkdirError(
      f"--workdir={self.workdir} cannot be written ({e.strerror}: {e.filename}): a run writes "
      "its lock, checkpoints and logs there. Make it writable, or copy the run to a writable "
      "--workdir to go on training (sample and evaluate read it where it is)"
    )

  def _acquire_local(self) -> None:
    try:
      os.makedirs(self.workdir, exist_ok=True)
    except OSError as e:
      if e.errno in NOT_WRITABLE:
        raise self._not_writable(e) from None
      raise
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._read()
        if holder is None:  # another run may be between creating its lock and writing it
          time.sleep(0.2)
          holder = self._read()
        why = self._stale(holder)
        if why is None:
          raise self._refuse(holder) from None
        self._take_over(holder, why)
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass  # another run took it over first; the next O_EXCL decides
        continue
      except OSError as e:  # a read-only file system or folder: said as such
        if e.errno in NOT_WRITABLE:
          raise self._not_writable(e) from None
        raise
      holder = _holder()
      try:
        with os.fdopen(fd, "w") as f:
          json.dump(holder, f)
      except BaseException:  # e.g. a SIGTERM right here: no empty lock file left behind
        os.remove(self.path)
        raise
      self._mine = holder
      return
    raise self._refuse(self._read())

  def acquire(self) -> None:
    """Process 0 takes the lock; every process learns the outcome (one decision)."""
    error = None
    if jax.process_index() == 0:
      try:
        self._acquire_remote() if is_remote(self.path) else self._acquire_local()
      except Exception as e:  # every process must hear of it, or the others would hang
        error = e
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      refused = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
      if int(refused) and error is None:
        error = WorkdirLockedError(f"{self.workdir} is in use by another run (see process 0)")
    if error is not None:
      raise error
    if self._mine is not None:
      self._stop.clear()
      self._beater = threading.Thread(target=self._beat, name="run.lock heartbeat", daemon=True)
      self._beater.start()

  def _beat(self) -> None:
    """Rewrites the lock's heartbeat every `heartbeat_s` until release, unless another run
    has taken the lock over (then says so once and stops)."""
    while not self._stop.wait(self.heartbeat_s):
      with self._io:
        if self._mine is None:
          return
        try:
          holder = self._read()
          if not _same_holder(holder, self._mine):
            logging.warning(
              "%s was taken over by %s while this run held it; this run no longer renews it",
              self.path,
              self._describe(holder),
            )
            return
          mine = {**self._mine, "beat": time.time()}
          self._write(mine)
          self._mine = mine
        except OSError as e:  # a full disk or a lost bucket: the run itself decides
          logging.warning("Could not renew the heartbeat of %s: %s", self.path, e)

  def release(self) -> None:
    self._stop.set()
    if self._beater is not None:
      self._beater.join(timeout=30)
      self._beater = None
    with self._io:
      if self._mine is None:
        return
      if _same_holder(self._read(), self._mine):  # never remove a lock another run took over
        if is_remote(self.path):
          epath.Path(self.path).unlink(missing_ok=True)
        else:
          try:
            os.remove(self.path)
          except FileNotFoundError:
            pass
      self._mine = None

  def __enter__(self) -> "Lock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
