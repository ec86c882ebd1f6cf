"""Tests for infonoise_jax.metrics.

The writer tests (`-k writer`) also run in a venv WITH TensorFlow, where `create_writer` must
take clu's path; the read-back helper accepts both encodings TensorBoard understands
(TF2 tensors and the classic simple_value / Summary.Image / HistogramProto fields).
"""

import importlib.util
import io
import os
import pathlib
import subprocess
import sys
import threading

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tensorboard import data_compat
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.util import tensor_util

from infonoise_jax import metrics, writers

HAS_TF = importlib.util.find_spec("tensorflow") is not None


# ------------------------------------------------------------------------------ read-back helper


def _decode_png(data: bytes) -> np.ndarray:
  image = np.asarray(Image.open(io.BytesIO(data)))
  return image[..., None] if image.ndim == 2 else image


def read_back(logdir: str) -> dict:
  """Everything under `logdir` as plain values, whichever encoding the writer used."""
  acc = ea.EventAccumulator(logdir, size_guidance={k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE})
  acc.Reload()
  tags = acc.Tags()
  out = {"scalars": {}, "images": {}, "histograms": {}, "texts": {}}
  out["tensors"] = set(tags["tensors"])
  for tag in tags["scalars"]:
    out["scalars"][tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
  for tag in tags["images"]:  # classic: one image per tag, N > 1 as "<key>/<i>"
    key, _, index = tag.rpartition("/")
    key = key if index.isdigit() else tag
    (event,) = acc.Images(tag)
    out["images"].setdefault(key, []).append(_decode_png(event.encoded_image_string))
  for tag in tags["histograms"]:
    (event,) = acc.Histograms(tag)
    out["histograms"][tag] = np.asarray(event.histogram_value.bucket)
  for tag in tags["tensors"]:
    events = acc.Tensors(tag)
    plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
    values = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
    if plugin == "scalars":
      out["scalars"][tag] = [(e.step, float(v)) for e, v in zip(events, values, strict=True)]
    elif plugin == "images":  # TF2: [width, height, png_0, png_1, ...]
      out["images"][tag] = [_decode_png(png) for png in values[0][2:]]
    elif plugin == "histograms":  # TF2: rows of (left edge, right edge, count)
      out["histograms"][tag] = values[0][:, 2]
    elif plugin == "text":
      out["texts"][tag] = values[0].item().decode()
  return out


def _event_files(logdir) -> list[str]:
  return [f for _, _, fs in os.walk(logdir) for f in fs if f.startswith("events.out")]


# ------------------------------------------------------------------------------ writers

# What clu's writer (TensorFlow's tf.summary) writes for the calls in `_write_all`, by plugin,
# as TensorBoard reads it back; the TensorFlow-free writer must write the same.
CLU_TAGS = {
  ("scalars", "loss"),
  ("scalars", "lr"),
  ("images", "grid"),
  ("images", "gray"),
  ("histograms", "sigma"),
  ("text", "note"),
  ("hparams", "_hparams_/session_start_info"),
}


def tags_by_plugin(logdir) -> set[tuple[str, str]]:
  """(plugin, tag) of every summary value under `logdir`, legacy protos migrated to the TF2
  form as TensorBoard itself does (tensorboard.data_compat)."""
  out = set()
  for path in sorted(_event_paths(logdir)):
    for event in event_file_loader.EventFileLoader(str(path)).Load():
      for value in event.summary.value:
        value = data_compat.migrate_value(value)
        out.add((value.metadata.plugin_data.plugin_name, value.tag))
  return out


def _event_paths(logdir) -> list[str]:
  return [os.path.join(d, f) for d, _, fs in os.walk(logdir) for f in fs if "tfevents" in f]


GRID_HWC = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
# floats in [0, 1] -> floor(255.5 v), as tf.summary.image does; two images
GRAY_NHWC = np.array([0.0, 0.5, 1.0, 2.0])[None, None, :, None] * np.ones((2, 3, 1, 1))
GRAY_NHWC[1] = 0.25
# 5 buckets over [0, 5]: the centers 0.5..4.5 with multiplicity 1..5 plus both endpoints
HIST_X = np.concatenate([np.repeat(np.arange(5) + 0.5, np.arange(1, 6)), [0.0, 5.0]])


def _write_all(writer) -> None:
  writer.write_hparams({"optim": {"lr": 1e-3}, "model": "unet"})
  writer.write_scalars(10, {"loss": 0.5, "lr": jnp.float32(1e-3)})
  writer.write_scalars(20, {"loss": np.float32(0.25)})
  writer.write_images(20, {"grid": GRID_HWC, "gray": GRAY_NHWC})
  writer.write_histograms(20, {"sigma": HIST_X}, num_buckets={"sigma": 5})
  writer.write_texts(20, {"note": "hello"})
  writer.close()


def test_writer_class_is_clu_iff_tensorflow_importable(tmp_path):
  writer = metrics.create_writer(str(tmp_path), just_logging=False)
  if HAS_TF:
    from clu import metric_writers

    assert isinstance(writer, metric_writers.AsyncWriter)
  else:
    assert isinstance(writer, writers.TensorBoardXWriter)
  writer.close()


def test_writer_has_every_method_of_clus_interface():
  """clu's MetricWriter abstract methods (read from clu's source: it imports without TF)."""
  import ast

  import clu

  source = pathlib.Path(clu.__file__).parent / "metric_writers" / "interface.py"
  tree = ast.parse(source.read_text())
  (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MetricWriter"]
  abstract = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)} - {"__init__"}
  assert abstract <= set(dir(writers.TensorBoardXWriter))
  assert abstract <= set(dir(writers.MetricWriter))


@pytest.mark.parametrize("use_clu", [True, False], ids=["default", "tensorboardx"])
def test_writer_round_trip(tmp_path, use_clu):
  _write_all(metrics.create_writer(str(tmp_path), just_logging=False, use_clu=use_clu))
  assert tags_by_plugin(tmp_path) == CLU_TAGS
  got = read_back(str(tmp_path))
  assert [s for s, _ in got["scalars"]["loss"]] == [10, 20]
  np.testing.assert_allclose([v for _, v in got["scalars"]["loss"]], [0.5, 0.25])
  np.testing.assert_allclose(got["scalars"]["lr"][0][1], 1e-3, rtol=1e-6)
  (grid,) = got["images"]["grid"]
  np.testing.assert_array_equal(grid, GRID_HWC)
  # clu: one card with both images; tensorboardX: both tiled side by side into one image.
  gray = got["images"]["gray"]
  first, second = (gray[0], gray[1]) if len(gray) == 2 else (gray[0][:, :4], gray[0][:, 4:8])
  np.testing.assert_array_equal(first[0, :, 0], [0, 127, 255, 255])
  np.testing.assert_array_equal(second[..., 0], np.full((3, 4), 63))
  np.testing.assert_array_equal(got["histograms"]["sigma"], [2, 2, 3, 4, 6])
  assert got["texts"]["note"] == "hello"


@pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow for clu's writer")
def test_writer_tags_equal_clus_side_by_side(tmp_path):
  _write_all(metrics.create_writer(str(tmp_path / "clu"), just_logging=False))
  _write_all(metrics.create_writer(str(tmp_path / "tbx"), just_logging=False, use_clu=False))
  assert tags_by_plugin(tmp_path / "clu") == tags_by_plugin(tmp_path / "tbx") == CLU_TAGS


def test_tensorboardx_flush_puts_every_written_event_in_the_file(tmp_path):
  """flush() means on disk: tensorboardX's own flush left its queue's last events unwritten
  (a run killed after a checkpoint lost the windows up to its step for good)."""
  writer = writers.TensorBoardXWriter(str(tmp_path))
  writer.write_scalars(1, {f"s{i}": float(i) for i in range(40)})
  writer.flush()
  (path,) = _event_paths(tmp_path)
  events = list(event_file_loader.EventFileLoader(path).Load())
  assert sum(len(e.summary.value) for e in events) == 40
  writer.write_scalars(2, {"s0": 1.0})  # the writer goes on after a flush
  writer.close()
  assert read_back(str(tmp_path))["scalars"]["s0"] == [(1, 0.0), (2, 1.0)]


def test_writer_just_logging_writes_no_files(tmp_path):
  writer = metrics.create_writer(str(tmp_path), just_logging=True)
  writer.write_scalars(1, {"loss": 1.0})
  writer.write_images(1, {"img": np.zeros((2, 2, 3), np.uint8)})
  writer.write_texts(1, {"t": "x"})
  writer.close()
  assert _event_files(tmp_path) == []


def test_writer_writes_remote_urls_through_fsspec(tmp_path):
  """A `memory://` log dir (standing in for gs://) gets the events, not a local copy."""
  fs = fsspec.filesystem("memory")
  writer = writers.TensorBoardXWriter("memory://bucket/run/tensorboard")
  writer.write_scalars(3, {"loss": 0.5})
  writer.flush()
  writer.write_scalars(4, {"loss": 0.25})
  writer.close()
  (name,) = fs.ls("/bucket/run/tensorboard", detail=False)
  local = tmp_path / "copy"
  local.mkdir()
  (local / pathlib.PurePosixPath(name).name).write_bytes(fs.cat_file(name))
  assert [v for _, v in read_back(str(local))["scalars"]["loss"]] == [0.5, 0.25]
  assert not any(p.name in ("memory:", "bucket") for p in pathlib.Path.cwd().iterdir())


# ------------------------------------------------------------------------------ window metrics


def test_window_metrics_average_last_binned_and_counts():
  steps = [
    {"loss": 1.0, "grad_norm": 2.0, "learning_rate": 0.1, "infonoise/refreshes": 0,
     "bin_loss_sum": [2.0, 0.0, 0.0], "bin_count": [1.0, 0.0, 0.0]},
    {"loss": 3.0, "grad_norm": 4.0, "learning_rate": 0.2, "infonoise/refreshes": 1,
     "bin_loss_sum": [4.0, 3.0, 0.0], "bin_count": [3.0, 1.0, 0.0]},
  ]  # fmt: skip
  window = None
  for m in steps:
    window = metrics.accumulate(window, jax.tree.map(jnp.asarray, m))
  got = jax.device_get(metrics.compute_window(window))
  assert got["loss"] == pytest.approx(2.0) and got["grad_norm"] == pytest.approx(3.0)
  assert got["learning_rate"] == pytest.approx(0.2) and got["infonoise/refreshes"] == 1
  np.testing.assert_allclose(got[metrics.BINNED_LOSS], [1.5, 3.0, np.nan])
  np.testing.assert_allclose(got[metrics.SIGMA_COUNTS], [4.0, 1.0, 0.0])
  edges = np.array([0.0, 1.0, 2.0, 3.0])
  values = metrics.histogram_values(edges, got[metrics.SIGMA_COUNTS])
  np.testing.assert_allclose(np.histogram(values, edges)[0], [4, 1, 0])


# ------------------------------------------------------------------------------ progress


def test_progress_reporter_on_fake_clock():
  now = [0.0]
  progress = metrics.ProgressReporter(
    num_steps=1000, batch_size=32, flops_per_step=2e12, peak_flops=100e12, time_fn=lambda: now[0]
  )
  assert not progress.started
  progress.start(0)  # at t=0, after the first step
  now[0] = 10.0
  progress.mark(100)  # 100 steps in 10 s
  out = progress.report(100)
  assert out == pytest.approx(
    {
      "perf/steps_per_sec": 10.0,
      "perf/images_per_sec": 320.0,
      "perf/eta_seconds": 90.0,
      "perf/window_seconds": 10.0,
      "perf/excluded_seconds": 0.0,
      "perf/mfu": 0.2,  # 2 TFLOP x 10 steps/s of 100 TFLOP/s
    }
  )
  assert progress.report(150) is None  # not a window's end
  now[0] = 12.0
  with progress.excluded():  # a sample grid from t=12 to t=15: not training
    now[0] = 15.0
  now[0] = 18.0
  progress.mark(200)
  out = progress.report(200)  # 100 steps in 18 - 10 - 3 = 5 s
  assert out["perf/steps_per_sec"] == pytest.approx(20.0)
  assert out["perf/excluded_seconds"] == pytest.approx(3.0)
  assert out["perf/eta_seconds"] == pytest.approx(40.0)
  assert progress.totals == pytest.approx({"steps": 200, "seconds": 15.0, "excluded_seconds": 3.0})
  with progress.excluded():  # a final evaluation after the last window: in no window,
    now[0] = 20.0  # but still timed apart in the run's summary
  assert progress.excluded_seconds() == pytest.approx(5.0)
  line = metrics.format_progress(200, 1000, {"loss": 0.04123, "grad_norm": 0.3125, **out,
                                             "learning_rate": 1e-3, "bin_0": 5.0})  # fmt: skip
  assert line == "step 200/1000 | loss 0.04123 | grad 0.312 | lr 1.00e-03 | 640 img/s | ETA 40s"
  seq = metrics.format_progress(200, 1000, out, metrics.example_unit(encoding=object()))
  assert seq == "step 200/1000 | 640 seq/s | ETA 40s"  # DNA and text count sequences
  assert metrics.example_unit(None) == "img"
  assert metrics.format_duration(3723) == "1h02m03s"
  progress.close()


class _Gate:
  """Stands in for a window's arrays: 'ready' once the test opens it."""

  def __init__(self):
    self.event = threading.Event()

  def block_until_ready(self):
    self.event.wait()
    return self


def test_progress_windows_end_when_the_device_finishes_them_not_when_dispatched():
  now = [0.0]
  progress = metrics.ProgressReporter(num_steps=300, batch_size=1, time_fn=lambda: now[0])
  progress.start(0)
  first, second = _Gate(), _Gate()
  now[0] = 1.0
  progress.mark(100, first)  # the host dispatched step 100 at t=1, far ahead of the device
  now[0] = 2.0
  progress.mark(200, second)
  now[0] = 10.0
  first.event.set()  # the device finished step 100 at t=10
  out = progress.report(100)
  assert out["perf/steps_per_sec"] == pytest.approx(10.0)  # not 100 (dispatch time)
  now[0] = 15.0
  second.event.set()
  assert progress.report(200)["perf/steps_per_sec"] == pytest.approx(20.0)
  progress.close()


def test_progress_on_device_arrays_and_excluding_waits_for_the_state():
  progress = metrics.ProgressReporter(num_steps=4, batch_size=8)
  x = jnp.ones((64, 64))
  progress.start(0, x)
  y = x @ x
  with progress.excluded(y):
    pass
  progress.mark(4, (y @ y)[0, 0])
  out = progress.report(4)
  assert out["perf/images_per_sec"] > 0 and out["perf/excluded_seconds"] >= 0
  progress.close()
  progress.close()  # idempotent


# ------------------------------------------------------------------------------ late fetch


class _Probe:
  """A device-array stand-in that records when it is copied and converted."""

  def __init__(self, value):
    self.value, self.copies_started, self.conversions = value, 0, 0

  def copy_to_host_async(self):
    self.copies_started += 1

  def __array__(self, dtype=None, copy=None):
    self.conversions += 1
    return np.asarray(self.value, dtype)


def test_delayed_fetcher_returns_previous_window_on_next_push():
  fetcher = metrics.DelayedFetcher(start_step=0)
  first, second = _Probe(1.5), _Probe(2.5)
  assert fetcher.push(100, {"loss": first}) is None
  assert (first.copies_started, first.conversions) == (1, 0)  # copy started, host not blocked

  window = fetcher.push(200, {"loss": second, "profile": jnp.arange(3.0)})
  assert (window.start_step, window.end_step) == (0, 100)
  assert window.metrics == {"loss": 1.5}
  assert isinstance(window.metrics["loss"], float)
  assert (second.copies_started, second.conversions) == (1, 0)

  last = fetcher.flush()
  assert (last.start_step, last.end_step) == (100, 200)
  assert last.metrics["loss"] == 2.5
  np.testing.assert_array_equal(last.metrics["profile"], [0.0, 1.0, 2.0])
  assert fetcher.flush() is None


def test_delayed_fetcher_flattens_nested_metrics():
  fetcher = metrics.DelayedFetcher(start_step=500)
  fetcher.push(600, {"schedule": {"cdf_change": jnp.float32(0.25)}})
  window = fetcher.flush()
  assert window.start_step == 500
  assert window.metrics == {"schedule/cdf_change": 0.25}


# ------------------------------------------------------------------------------ finite guard


def test_check_finite_passes_finite_and_non_numeric():
  metrics.check_finite({"loss": 0.1, "profile": np.ones(4), "name": "x"}, (0, 100))


def test_check_finite_names_metric_steps_and_checkpoint():
  with pytest.raises(metrics.NonFiniteError) as info:
    metrics.check_finite({"loss": float("nan"), "lr": 1e-3}, (1200, 1300), "/ckpt/1000")
  assert str(info.value).startswith(
    "loss became NaN between steps 1200 and 1300; last good checkpoint is kept at /ckpt/1000"
  )
  # a rerun repeats the steps and a resume refuses optim.*: the way on is a new workdir
  assert "train again in a new --workdir with a lower optim.lr" in str(info.value)
  assert isinstance(info.value, FloatingPointError)
  assert info.value.step_range == (1200, 1300)


def test_check_finite_reports_every_bad_metric_and_missing_checkpoint():
  bad = {"loss": 1.0, "grad_norm": float("inf"), "profile": np.array([1.0, -np.inf, np.nan])}
  with pytest.raises(metrics.NonFiniteError) as info:
    metrics.check_finite(bad, (0, 100))
  assert info.value.metrics == {"grad_norm": "Inf", "profile": "NaN"}
  assert str(info.value) == (
    "grad_norm became Inf, profile became NaN between steps 0 and 100; "
    "no checkpoint was saved before it (fix the setting and rerun with --fresh: this attempt's "
    "logs are then moved aside)"
  )


def test_tensorboardx_writer_does_not_import_torch(tmp_path):
  """tensorboardX imports torch at import time; the writer keeps it out (seconds of start-up
  on hosts with torch) and leaves `import torch` working afterwards."""
  fake = tmp_path / "fake" / "torch"
  fake.mkdir(parents=True)
  marker = tmp_path / "torch_imported"
  (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nTensor = object\n")
  code = (
    "import sys\n"
    "from infonoise_jax import writers\n"
    f"w = writers.TensorBoardXWriter({str(tmp_path / 'tb')!r})\n"
    "w.write_scalars(1, {'loss': 0.5}); w.close()\n"
    f"import os; assert not os.path.exists({str(marker)!r}), 'torch was imported'\n"
    "import torch\n"
    f"assert os.path.exists({str(marker)!r})\n"
  )
  root = str(pathlib.Path(__file__).resolve().parents[1])
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), root])}
  r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
