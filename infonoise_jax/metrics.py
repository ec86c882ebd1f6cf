"""Training-loop metrics on the host: TensorBoard writers, console progress, NaN/Inf guard.

* `create_writer` returns clu's default writer when `clu.metric_writers` imports (it needs
  TensorFlow), else `TensorBoardWriter`, a TensorFlow-free writer with the same methods that
  writes real event files through tensorboard's own `EventFileWriter` and protos.
* `ProgressReporter` turns (step, wall time) into steps/s, images/s and time left.
* `DelayedFetcher` fetches a log window's device metrics one window late, so the host never
  waits on the device (STYLE.md idiom 8).
* `check_finite` aborts with `NonFiniteError`, naming the metric and the step range.
"""

import dataclasses
import io
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

logger = logging.getLogger(__name__)

DEFAULT_NUM_BUCKETS = 30  # tensorboard's (and TF's) default histogram bucket count


class MetricWriter(Protocol):
  """The methods of `clu.metric_writers.MetricWriter` the trainer uses."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None: ...

  def write_images(self, step: int, images: Mapping[str, Any]) -> None: ...

  def write_histograms(
    self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
  ) -> None: ...

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None: ...

  def write_hparams(self, hparams: Mapping[str, Any]) -> None: ...

  def flush(self) -> None: ...

  def close(self) -> None: ...


# ------------------------------------------------------------------------------ writers


def create_writer(
  logdir: str | None, just_logging: bool, *, asynchronous: bool = True, use_clu: bool = True
) -> MetricWriter:
  """Writer for process 0 (`just_logging=False`) or any other process (logging only).

  With TensorFlow importable (and `use_clu`), this is `clu.metric_writers.create_default_writer`
  and TensorFlow is kept off the GPUs; otherwise a `TensorBoardWriter` (whose event file I/O
  already runs on a background thread, so `asynchronous` only concerns the clu path).
  """
  clu_writers = _import_clu_writers() if use_clu else None
  if clu_writers is not None:
    return clu_writers.create_default_writer(
      logdir, just_logging=just_logging, asynchronous=asynchronous
    )
  return TensorBoardWriter(None if just_logging else logdir)


def _import_clu_writers():
  """`clu.metric_writers`, or None when it cannot import (no or broken TensorFlow)."""
  try:
    from clu import metric_writers  # imports TensorFlow
  except Exception as e:  # noqa: BLE001 - a broken TF install must not stop training
    logger.info("clu.metric_writers unavailable (%s): using TensorBoardWriter.", e)
    return None
  try:
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # TF only writes summaries: leave GPUs to JAX
  except (ImportError, RuntimeError, ValueError) as e:
    logger.info("Could not hide GPUs from TensorFlow: %s", e)
  return metric_writers


class TensorBoardWriter:
  """clu-compatible MetricWriter without TensorFlow; `logdir=None` only logs.

  Scalars are written as `simple_value`, images as PNG `Summary.Image` (N > 1 images under
  `<key>/<i>`), histograms as `HistogramProto` with TF's equal-width buckets, texts and
  hparams through tensorboard's numpy summary builders; TensorBoard reads all of them.
  Scalars are also logged through `logging`, like clu's LoggingWriter.
  """

  def __init__(self, logdir: str | None, flush_secs: float = 30.0):
    self._events = None if logdir is None else EventFileWriter(str(logdir), flush_secs=flush_secs)

  def _add(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
    if self._events is not None and values:
      summary = summary_pb2.Summary(value=values)
      self._events.add_event(
        event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
      )

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    host = {k: float(np.asarray(v).item()) for k, v in scalars.items()}
    logger.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in sorted(host.items())))
    self._add(step, [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in host.items()])

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """`images[key]`: NHWC or HWC, uint8 or float in [0, 1] (as tf.summary.image), C in 1/3/4."""
    logger.info("[%d] Got images: %s.", step, {k: np.shape(v) for k, v in images.items()})
    values = []
    for key, batch in images.items():
      batch_NHWC = _to_uint8(np.asarray(batch))
      if batch_NHWC.ndim == 3:
        batch_NHWC = batch_NHWC[None]
      n = batch_NHWC.shape[0]
      for i, image_HWC in enumerate(batch_NHWC):
        tag = key if n == 1 else f"{key}/{i}"
        values.append(summary_pb2.Summary.Value(tag=tag, image=_image_proto(image_HWC)))
    self._add(step, values)

  def write_histograms(
    self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
  ) -> None:
    values = []
    for key, array in arrays.items():
      k = (num_buckets or {}).get(key) or DEFAULT_NUM_BUCKETS
      histo = histogram_proto(np.asarray(array), k)
      if histo is not None:
        values.append(summary_pb2.Summary.Value(tag=key, histo=histo))
    self._add(step, values)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    logger.info("[%d] Got texts: %s.", step, texts)
    for key, text in texts.items():
      self._add(step, list(text_summary.text_pb(key, text).value))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    flat = {
      k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in _flatten(hparams)
    }
    logger.info("[Hyperparameters] %s", flat)
    self._add(0, list(hparams_summary.hparams_pb(flat).value))

  def write_summaries(
    self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
  ) -> None:
    """Raw tensor summaries; `metadata[key]` is a SummaryMetadata proto or its bytes."""
    out = []
    for key, value in values.items():
      md = (metadata or {}).get(key)
      if isinstance(md, bytes):
        md = summary_pb2.SummaryMetadata.FromString(md)
      tensor = tensor_util.make_tensor_proto(np.asarray(value))
      out.append(summary_pb2.Summary.Value(tag=key, tensor=tensor, metadata=md))
    self._add(step, out)

  def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
    del step, videos
    logger.warning("TensorBoardWriter does not write videos.")

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
    del step, audios, sample_rate
    logger.warning("TensorBoardWriter does not write audio.")

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None


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


def _image_proto(image_HWC: np.ndarray) -> summary_pb2.Summary.Image:
  height, width, channels = image_HWC.shape
  buf = io.BytesIO()
  Image.fromarray(image_HWC[..., 0] if channels == 1 else image_HWC).save(buf, format="PNG")
  return summary_pb2.Summary.Image(
    height=height, width=width, colorspace=channels, encoded_image_string=buf.getvalue()
  )


def histogram_proto(array: np.ndarray, num_buckets: int) -> summary_pb2.HistogramProto | None:
  """TF's histogram: `num_buckets` equal-width buckets over [min, max] of the finite values,
  bucket = floor((x - min) / width) clamped to the last; one unit bucket if min == max."""
  x = array.astype(np.float64).ravel()
  x = x[np.isfinite(x)]
  if x.size == 0:
    return None
  lo, hi = float(x.min()), float(x.max())
  if hi == lo:
    limits, counts = np.array([hi + 0.5]), np.array([x.size])
  else:
    idx = np.minimum(
      np.floor((x - lo) / ((hi - lo) / num_buckets)).astype(np.int64), num_buckets - 1
    )
    counts = np.bincount(idx, minlength=num_buckets)
    limits = np.linspace(lo, hi, num_buckets + 1)[1:]
    limits[-1] = hi
  return summary_pb2.HistogramProto(
    min=lo,
    max=hi,
    num=float(x.size),
    sum=float(x.sum()),
    sum_squares=float(np.dot(x, x)),
    bucket_limit=limits.tolist(),
    bucket=counts.astype(np.float64).tolist(),
  )


# ------------------------------------------------------------------------------ progress


class ProgressReporter:
  """Console progress every `every` steps: steps/s, images/s, time left.

  Call it after each step (or at least at every multiple of `every`). The first call only
  starts the clock; later calls at multiples of `every` measure the window since the last
  report, log one line and return the numbers as scalars for the writer, else None.
  Rates are per window, so the first window includes compilation; time left uses the
  latest window's rate.
  """

  def __init__(
    self,
    num_steps: int,
    batch_size: int,
    every: int,
    *,
    time_fn: Callable[[], float] = time.monotonic,
    print_fn: Callable[[str], None] | None = None,
  ):
    self.num_steps, self.batch_size, self.every = num_steps, batch_size, every
    self._time_fn = time_fn
    self._print_fn = print_fn or logger.info
    self._last: tuple[int, float] | None = None

  def __call__(self, step: int) -> dict[str, float] | None:
    now = self._time_fn()
    if self._last is None:
      self._last = (step, now)
      return None
    if step % self.every or step <= self._last[0]:
      return None
    last_step, last_time = self._last
    self._last = (step, now)
    steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
    eta_s = max(self.num_steps - step, 0) / steps_per_sec
    self._print_fn(
      f"step {step}/{self.num_steps} ({100.0 * step / self.num_steps:.1f}%) | "
      f"{steps_per_sec:.3g} steps/s | {steps_per_sec * self.batch_size:.4g} img/s | "
      f"ETA {format_duration(eta_s)}"
    )
    return {
      "perf/steps_per_sec": steps_per_sec,
      "perf/images_per_sec": steps_per_sec * self.batch_size,
      "perf/eta_seconds": eta_s,
    }


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
