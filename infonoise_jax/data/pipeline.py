"""Stateless, resumable batching: a training step's batch is a pure function of (seed, step).

The stream is the concatenation of per-epoch permutations of the N examples. The global
batch of step s covers stream positions p = s*B, ..., s*B + B - 1; position p belongs to
epoch e = p // N and holds example perm_e[p % N], where perm_e is seeded by (seed, e).
Every epoch thus visits every example exactly once (for any N, B), and resuming at step k
needs no saved iterator state. Process i of P takes the contiguous slice
[i*B/P, (i+1)*B/P) of the global batch, so the processes' shares are disjoint and their
concatenation is the single-process global batch. Optional horizontal flips are a hash of
(seed, p), hence also independent of the process split.

Randomness comes from a counter-based integer hash (the splitmix64 finalizer) rather than a
NumPy generator, so the stream is identical across NumPy versions and machines.
"""

import queue
import threading
from collections.abc import Callable

import numpy as np
from absl import logging

from infonoise_jax.data.sources import Source

_PERMUTATION_STREAM = 1
_FLIP_STREAM = 2


def _mix64(z: np.ndarray) -> np.ndarray:
  """splitmix64 finalizer on uint64 arrays (wrap-around arithmetic is intended)."""
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


def stream_hash(seed: int, stream: int, counter: int, i_N: np.ndarray) -> np.ndarray:
  """Pseudo-random uint64 per entry of `i_N`, a pure function of (seed, stream, counter, i)."""
  key = np.array([seed % 2**64], np.uint64)
  for word in (stream, counter):
    key = _mix64(key ^ np.array([word % 2**64], np.uint64))
  return _mix64(key + np.asarray(i_N, np.uint64) * np.uint64(0x9E3779B97F4A7C15))


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """perm_e: the order in which epoch `epoch` visits the examples (int64, length N)."""
  keys_N = stream_hash(seed, _PERMUTATION_STREAM, epoch, np.arange(num_examples))
  return np.argsort(keys_N, kind="stable")


class Pipeline:
  """This process's share of each step's global batch (see module docstring)."""

  def __init__(
    self,
    source: Source,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    *,
    random_flip: bool = False,
  ):
    if global_batch_size < 1 or process_count < 1:
      raise ValueError(
        f"Batch size ({global_batch_size}) and process count ({process_count}) must be >= 1"
      )
    if global_batch_size % process_count:
      raise ValueError(
        f"Global batch size (train.batch_size={global_batch_size}) must be divisible by "
        f"the number of processes ({process_count})"
      )
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} not in [0, {process_count})")
    if random_flip and not source.is_image:
      raise ValueError(f"data.random_flip needs images; {source.name} holds vectors")
    if global_batch_size > source.num_examples:  # legal (the stream wraps), rarely meant
      logging.warning(
        "train.batch_size=%d is larger than the %d training examples of %s: every batch holds "
        "each example more than once (%.1f epochs per step); a batch of at most %d avoids that",
        global_batch_size, source.num_examples, source.name,
        global_batch_size / source.num_examples, source.num_examples,
      )  # fmt: skip
    self.source = source
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.seed = seed
    self.process_index = process_index
    self.process_count = process_count
    self.random_flip = random_flip
    self._perms: dict[int, np.ndarray] = {}  # a few recent epochs' permutations
    self._perms_lock = threading.Lock()  # batch() may run in the prefetch and main threads

  def __getstate__(self) -> dict:  # for grain workers: no lock, no cached permutations
    return {k: v for k, v in self.__dict__.items() if k not in ("_perms", "_perms_lock")}

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._perms, self._perms_lock = {}, threading.Lock()

  def _permutation(self, epoch: int) -> np.ndarray:
    with self._perms_lock:
      perm = self._perms.get(epoch)
      if perm is None:
        perm = epoch_permutation(self.seed, epoch, self.source.num_examples)
        if len(self._perms) >= 4:
          self._perms.pop(min(self._perms))
        self._perms[epoch] = perm
      return perm

  def positions(self, step: int) -> np.ndarray:
    """Stream positions p (int64) of this process's share of step `step`'s global batch."""
    first = step * self.global_batch_size + self.process_index * self.local_batch_size
    return first + np.arange(self.local_batch_size, dtype=np.int64)

  def indices(self, step: int) -> np.ndarray:
    """Example indices of this process's share: perm_e[p % N] with e = p // N."""
    n = self.source.num_examples
    p_B = self.positions(step)
    epoch_B, offset_B = p_B // n, p_B % n
    idx_B = np.empty_like(p_B)
    for epoch in np.unique(epoch_B):  # one epoch, or two when the batch straddles a boundary
      sel = epoch_B == epoch
      idx_B[sel] = self._permutation(int(epoch))[offset_B[sel]]
    return idx_B

  def batch(self, step: int) -> np.ndarray:
    """This process's (global_batch_size // process_count, *shape) float32 batch for `step`."""
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    x_BX = self.source.get(self.indices(step))
    if self.random_flip:  # flip along W of (B, H, W, C) where the position's hash bit is set
      bit_B = stream_hash(self.seed, _FLIP_STREAM, 0, self.positions(step)) & np.uint64(1)
      rows = np.flatnonzero(bit_B)
      x_BX[rows] = x_BX[rows, :, ::-1]
    return x_BX

  def iterate(self, start_step: int = 0, buffer_size: int = 2, num_workers: int = 0):
    """Batches for steps start_step, start_step + 1, ...: with `num_workers` = 0 prepared by
    one background thread; otherwise by that many grain worker processes (`GrainBatches`),
    for sources read lazily (decoding per example is the bottleneck). Same batches either way.
    """
    if num_workers > 0:
      return GrainBatches(self, start_step, num_workers, buffer_size)
    return Prefetcher(self.batch, start_step, buffer_size)


class _StepBatch:
  """step -> Pipeline.batch(step); a picklable callable for grain's worker processes."""

  def __init__(self, pipeline: "Pipeline"):
    self.pipeline = pipeline

  def __call__(self, step: int) -> np.ndarray:
    return self.pipeline.batch(int(step))


class GrainBatches:
  """Iterator over this process's batches of steps start, start + 1, ..., computed by grain
  worker processes (`grain.IterDataset.mp_prefetch`): worker k of K computes the batches of
  steps start + k, start + k + K, ... and grain returns them in step order.

  Every batch is still the pure function `Pipeline.batch(step)` of the module docstring, so
  the stream is the same as the thread's (and resumes at any step); like grain's
  `ShardByJaxProcess`, each JAX process reads only its own share of every global batch, but
  the shares are slices of one global order, so the concatenation over processes does not
  depend on the number of processes. The source is pickled to the workers (lazy readers
  reopen their files there).
  """

  def __init__(self, pipeline: "Pipeline", start_step: int, num_workers: int, buffer_size: int):
    import grain
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads its absl flags; outside app.run use defaults
      flags.FLAGS.mark_as_parsed()
    steps = grain.MapDataset.range(start_step, 2**62).map(_StepBatch(pipeline))
    options = grain.MultiprocessingOptions(
      num_workers=num_workers, per_worker_buffer_size=max(1, buffer_size)
    )
    self._iterator = iter(steps.to_iter_dataset().mp_prefetch(options))

  def __iter__(self) -> "GrainBatches":
    return self

  def __next__(self) -> np.ndarray:
    return next(self._iterator)

  def close(self) -> None:
    """Stops the worker processes."""
    close = getattr(self._iterator, "close", None)
    if close is not None:
      close()

  def __enter__(self) -> "GrainBatches":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class Prefetcher:
  """Iterator over produce(start), produce(start + 1), ... computed ahead in one thread.

  Holds at most `buffer_size` finished batches. An exception in the thread is re-raised by
  `next`. Call `close()` (or use it as a context manager) to stop the thread early.
  """

  def __init__(self, produce: Callable[[int], np.ndarray], start_step: int, buffer_size: int):
    if buffer_size < 1:
      raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    self._queue: queue.Queue = queue.Queue(maxsize=buffer_size)
    self._stop = threading.Event()
    self._thread = threading.Thread(
      target=self._work, args=(produce, start_step), name="data-prefetch", daemon=True
    )
    self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _work(self, produce: Callable[[int], np.ndarray], step: int) -> None:
    while not self._stop.is_set():
      try:
        item = produce(step)
      except BaseException as e:  # handed to the consumer, which re-raises it
        self._put(e)
        return
      if not self._put(item):
        return
      step += 1

  def __iter__(self) -> "Prefetcher":
    return self

  def __next__(self) -> np.ndarray:
    while not self._stop.is_set():
      try:
        item = self._queue.get(timeout=0.1)
      except queue.Empty:
        continue
      if isinstance(item, BaseException):
        self.close()
        raise item
      return item
    raise StopIteration

  def close(self) -> None:
    """Stops the thread and drops the prefetched batches."""
    self._stop.set()
    while True:
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    self._thread.join()

  def __enter__(self) -> "Prefetcher":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class DevicePrefetcher(Prefetcher):
  """Iterator over `put(batch)` for the batches of `host`, made `buffer_size` steps ahead in
  one thread: the host-to-device copy of a step's batch overlaps the steps before it instead
  of sitting between two steps on the loop's thread. `put` places a host batch on the
  devices (e.g. `jax.make_array_from_process_local_data`); `close()` also closes `host`.
  """

  def __init__(self, host, put: Callable[[np.ndarray], object], buffer_size: int = 2):
    self._host = host
    super().__init__(lambda _: put(next(host)), 0, buffer_size)

  def close(self) -> None:
    """Stops the thread, then `host`: a thread waiting in next(host) gets its batch and sees
    the stop (closing a grain iterator first would leave it waiting)."""
    super().close()
    close = getattr(self._host, "close", None)
    if close is not None:
      close()
