"""TensorBoard writers with clu's `MetricWriter` interface, with or without TensorFlow.

* With TensorFlow importable, `create_writer` returns clu's own event writer
  (`clu.metric_writers.SummaryWriter` behind an `AsyncWriter`), with TensorFlow kept off the
  GPUs.
* Without it, `TensorBoardXWriter`: a thin adapter over tensorboardX (maintained, no
  TensorFlow) that writes the same tags with the same TensorBoard plugins (scalars, images,
  histograms, text, hparams), so TensorBoard shows the same cards either way.

Neither logs values to the console: the training loop prints one progress line per log window
(`metrics.format_progress`); other processes than 0 get a writer that writes nothing.

Remote log directories (`gs://bucket/run/tensorboard`): clu writes through TensorFlow's
gfile; tensorboardX's own GCS writer would need google-cloud-storage, so remote URLs are
written through fsspec instead (gcsfs for `gs://`, the same layer `etils.epath` uses),
never rewritten into local paths.
"""

import importlib.util
import io
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)


class MetricWriter(Protocol):
  """`clu.metric_writers.MetricWriter` (its abstract methods, same signatures)."""

  def write_summaries(
    self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
  ) -> None: ...

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None: ...

  def write_images(self, step: int, images: Mapping[str, Any]) -> None: ...

  def write_videos(self, step: int, videos: Mapping[str, Any]) -> None: ...

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None: ...

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None: ...

  def write_histograms(
    self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
  ) -> None: ...

  def write_hparams(self, hparams: Mapping[str, Any]) -> None: ...

  def flush(self) -> None: ...

  def close(self) -> None: ...


def create_writer(logdir: str | None, just_logging: bool, *, use_clu: bool = True) -> MetricWriter:
  """Event writer for process 0 (`just_logging=False`); a writer that writes nothing otherwise.

  clu's writer when TensorFlow imports (and `use_clu`), else `TensorBoardXWriter`.
  """
  if just_logging or logdir is None:
    return NullWriter()
  clu_writers = _import_clu_writers() if use_clu else None
  if clu_writers is not None:
    return clu_writers.AsyncWriter(clu_writers.SummaryWriter(str(logdir)))
  return TensorBoardXWriter(str(logdir))


def check_available(use_clu: bool = True) -> None:
  """Raises before any compile or data work when no event writer can be built: neither
  tensorboardX is installed nor clu's writer (which needs TensorFlow) imports. Cheap when
  tensorboardX is installed: a module lookup, not an import, so an installed but broken
  tensorboardX still fails later, when the writer is made."""
  if importlib.util.find_spec("tensorboardX") is not None:
    return
  if use_clu and _import_clu_writers() is not None:
    return
  raise ImportError(
    "No TensorBoard writer can be built: tensorboardX is not installed"
    + (" and clu.metric_writers does not import (it needs TensorFlow)" if use_clu else "")
    + ". Install it with `pip install tensorboardX` (requirements.txt lists it); nothing was"
    " written to the workdir."
  )


def _import_tensorboardx():
  """tensorboardX without the torch import its writer module does at import time (only to
  accept torch tensors, which this project never passes): importing torch took ~3 s of a
  restarted run's start-up on the GPU hosts, which have torch installed (BENCHMARKS.md)."""
  if "tensorboardX.writer" in sys.modules or "torch" in sys.modules:
    import tensorboardX

    return tensorboardX
  sys.modules["torch"] = None  # `import torch` raises ImportError while tensorboardX loads
  try:
    import tensorboardX
  finally:
    del sys.modules["torch"]
  return tensorboardX


def _import_clu_writers():
  """`clu.metric_writers`, or None when it cannot import (no or broken TensorFlow)."""
  try:
    from clu import metric_writers  # imports TensorFlow
  except Exception as e:  # noqa: BLE001 - a broken TF install must not stop training
    logger.info("clu.metric_writers unavailable (%s): using TensorBoardXWriter.", e)
    return None
  try:
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # TF only writes summaries: leave GPUs to JAX
  except (ImportError, RuntimeError, ValueError) as e:
    logger.info("Could not hide GPUs from TensorFlow: %s", e)
  return metric_writers


class NullWriter:
  """A MetricWriter that writes nothing (processes other than 0)."""

  def __getattr__(self, name: str):
    if name.startswith("write_") or name in ("flush", "close"):
      return lambda *args, **kwargs: None
    raise AttributeError(name)


class TensorBoardXWriter:
  """clu's MetricWriter over `tensorboardX.SummaryWriter` (no TensorFlow).

  Tags and plugins match clu's writer: scalars as scalars; `images[key]` (HWC or NHWC, uint8
  or float in [0, 1], as `tf.summary.image` takes them) as one image card `key` (N > 1 tiled
  into one grid); histograms with TF2's equal-width buckets (default 30); texts under `key`
  itself (tensorboardX's `add_text` would append "/text_summary"); hparams as one
  `_hparams_/session_start_info` summary, as clu's `hparams_api.hparams` writes.
  """

  def __init__(self, logdir: str, flush_secs: float = 30.0):
    tensorboardX = _import_tensorboardx()
    _register_remote_writer(logdir)
    self._writer = tensorboardX.SummaryWriter(logdir, flush_secs=flush_secs)

  def _add(self, summary, step: int) -> None:
    """Writes a tensorboard `Summary` proto (built by tensorboard's own summary helpers),
    re-read as tensorboardX's copy of the same proto schema."""
    from tensorboardX.proto import summary_pb2 as tbx_summary_pb2

    summary = tbx_summary_pb2.Summary.FromString(summary.SerializeToString())
    self._writer._get_file_writer().add_summary(summary, int(step), time.time())

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for key, value in scalars.items():
      self._writer.add_scalar(key, float(np.asarray(value).item()), int(step))

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    for key, batch in images.items():
      batch_NHWC = _to_uint8(np.asarray(batch))
      if batch_NHWC.ndim == 3:
        batch_NHWC = batch_NHWC[None]
      self._writer.add_images(key, batch_NHWC, int(step), dataformats="NHWC")

  def write_histograms(
    self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
  ) -> None:
    for key, array in arrays.items():
      k = (num_buckets or {}).get(key) or DEFAULT_NUM_BUCKETS
      edges, counts = equal_width_histogram(np.asarray(array), k)
      if counts is None:
        continue
      centres = 0.5 * (edges[1:] + edges[:-1])
      self._writer.add_histogram_raw(
        key,
        min=float(edges[0]),
        max=float(edges[-1]),
        num=float(counts.sum()),
        sum=float(counts @ centres),
        sum_squares=float(counts @ centres**2),
        bucket_limits=edges[1:].tolist(),
        bucket_counts=counts.tolist(),
        global_step=int(step),
      )

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    from tensorboard.plugins.text import summary_v2 as text_summary

    for key, text in texts.items():
      self._add(text_summary.text_pb(key, str(text)), step)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    from tensorboard.plugins.hparams import summary_v2 as hparams_summary

    flat = {
      k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in _flatten(hparams)
    }
    self._add(hparams_summary.hparams_pb(flat), 0)

  def write_summaries(
    self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
  ) -> None:
    """Raw tensor summaries; `metadata[key]` is a SummaryMetadata proto or its bytes."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.util import tensor_util

    out = []
    for key, value in values.items():
      md = (metadata or {}).get(key)
      if isinstance(md, bytes):
        md = summary_pb2.SummaryMetadata.FromString(md)
      tensor = tensor_util.make_tensor_proto(np.asarray(value))
      out.append(summary_pb2.Summary.Value(tag=key, tensor=tensor, metadata=md))
    self._add(summary_pb2.Summary(value=out), step)

  def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
    del step, videos
    logger.warning("TensorBoardXWriter does not write videos.")

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
    for key, value in audios.items():
      self._writer.add_audio(key, np.asarray(value), int(step), sample_rate=sample_rate)

  def flush(self) -> None:
    """Every event written so far is in the file (on disk, or the remote object) on return."""
    _drain_queue(self._writer)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _drain_queue(summary_writer) -> None:
  """Writes the events tensorboardX's worker thread still holds in its queue, in order.

  Its `flush()` flushes the file with only what that thread has taken from the queue so far:
  the last ~10 events (its queue's size) could still be waiting, and a run killed after a
  "flushed" checkpoint lost them for good (the resume starts after the checkpoint's step). The
  thread is stopped after the queued events (its stop() queues a marker and joins) and a new
  one started on the same queue and file; on tensorboardX versions without these attributes,
  nothing is done."""
  event_writer = getattr(getattr(summary_writer, "file_writer", None), "event_writer", None)
  worker = getattr(event_writer, "_worker", None)
  if worker is None or not hasattr(worker, "stop") or not worker.is_alive():
    return
  try:  # the successor is made before the worker stops: a changed signature stops nothing
    args = (event_writer._event_queue, event_writer._ev_writer, event_writer._flush_secs)
    successor = type(worker)(*args)
  except (AttributeError, TypeError):
    return
  worker.stop()
  event_writer._worker = successor
  successor.start()


DEFAULT_NUM_BUCKETS = 30  # TF2's (and clu's) default histogram bucket count


def equal_width_histogram(array: np.ndarray, num_buckets: int):
  """TF2's histogram: `num_buckets` equal-width buckets over [min, max] of the finite values,
  bucket = floor((x - min) / width) clamped to the last; one unit bucket if min == max.
  Returns (edges (K+1,), counts (K,)), or (None, None) without finite values."""
  x = array.astype(np.float64).ravel()
  x = x[np.isfinite(x)]
  if x.size == 0:
    return None, None
  lo, hi = float(x.min()), float(x.max())
  if hi == lo:
    return np.array([lo - 0.5, hi + 0.5]), np.array([x.size])
  idx = np.minimum(np.floor((x - lo) / ((hi - lo) / num_buckets)).astype(np.int64), num_buckets - 1)
  edges = np.linspace(lo, hi, num_buckets + 1)
  edges[-1] = hi
  return edges, np.bincount(idx, minlength=num_buckets)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
  """Nested mappings -> [("a.b", leaf)], as clu flattens hparams."""
  out = []
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.extend(_flatten(v, f"{prefix}{k}."))
    else:
      out.append((f"{prefix}{k}", v))
  return out


def _to_uint8(images: np.ndarray) -> np.ndarray:
  """uint8 as is; floats in [0, 1] times 255.5, truncated (tf.image.convert_image_dtype)."""
  if images.dtype == np.uint8:
    return images
  return np.clip(np.nan_to_num(images.astype(np.float64)) * 255.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ remote files


class _FsspecRecordFile:
  """An event file at a remote URL: records are buffered and each flush rewrites the object
  (object stores cannot append; tensorboardX's own GCS writer works the same way)."""

  def __init__(self, url: str):
    import fsspec

    self._fs, self._path = fsspec.core.url_to_fs(url)
    self._buffer, self._lock = io.BytesIO(), threading.Lock()

  def write(self, data: bytes) -> None:
    with self._lock:
      self._buffer.write(data)

  def flush(self) -> None:
    with self._lock:
      self._fs.pipe_file(self._path, self._buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _FsspecRecordFactory:
  def open(self, path: str) -> _FsspecRecordFile:
    return _FsspecRecordFile(path)

  def directory_check(self, path: str) -> None:
    del path  # object stores have no directories to create


def _register_remote_writer(logdir: str) -> None:
  """Routes tensorboardX's event files for `<scheme>://` log dirs through fsspec."""
  scheme, sep, _ = logdir.partition("://")
  if sep and scheme != "file":
    from tensorboardX import record_writer

    record_writer.register_writer_factory(scheme, _FsspecRecordFactory())
