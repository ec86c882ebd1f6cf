"""Tests for infonoise_jax.metrics.

The writer tests (`-k writer`) also run in a venv WITH TensorFlow, where `create_writer` must
take clu's path; the read-back helper accepts both encodings TensorBoard understands
(TF2 tensors and the classic simple_value / Summary.Image / HistogramProto fields).
"""

import importlib.util
import io
import logging
import os

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.util import tensor_util

from infonoise_jax import metrics

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


def test_writer_class_is_clu_iff_tensorflow_importable(tmp_path):
  writer = metrics.create_writer(str(tmp_path), just_logging=False)
  if HAS_TF:
    from clu import metric_writers

    assert isinstance(writer, metric_writers.AsyncMultiWriter)
  else:
    assert isinstance(writer, metrics.TensorBoardWriter)
  writer.close()


@pytest.mark.parametrize("use_clu", [True, False], ids=["default", "tensorboard_fallback"])
def test_writer_round_trip(tmp_path, use_clu):
  rng = np.random.default_rng(0)
  grid_HWC = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
  # floats in [0, 1] -> floor(255.5 v), as tf.summary.image does
  gray_NHWC = np.array([0.0, 0.5, 1.0, 2.0])[None, None, :, None] * np.ones((2, 3, 1, 1))
  gray_NHWC[1] = 0.25
  # 5 buckets over [0, 5]: the centers 0.5..4.5 with multiplicity 1..5 plus both endpoints
  hist_x = np.concatenate([np.repeat(np.arange(5) + 0.5, np.arange(1, 6)), [0.0, 5.0]])

  writer = metrics.create_writer(str(tmp_path), just_logging=False, use_clu=use_clu)
  writer.write_hparams({"optim": {"lr": 1e-3}, "model": "unet"})
  writer.write_scalars(10, {"loss": 0.5, "lr": jnp.float32(1e-3)})
  writer.write_scalars(20, {"loss": np.float32(0.25)})
  writer.write_images(20, {"grid": grid_HWC, "gray": gray_NHWC})
  writer.write_histograms(20, {"sigma": hist_x}, num_buckets={"sigma": 5})
  writer.write_texts(20, {"note": "hello"})
  writer.close()

  got = read_back(str(tmp_path))
  assert [s for s, _ in got["scalars"]["loss"]] == [10, 20]
  np.testing.assert_allclose([v for _, v in got["scalars"]["loss"]], [0.5, 0.25])
  np.testing.assert_allclose(got["scalars"]["lr"][0][1], 1e-3, rtol=1e-6)
  (grid,) = got["images"]["grid"]
  np.testing.assert_array_equal(grid, grid_HWC)
  assert len(got["images"]["gray"]) == 2
  np.testing.assert_array_equal(got["images"]["gray"][0][0, :, 0], [0, 127, 255, 255])
  np.testing.assert_array_equal(got["images"]["gray"][1], np.full((3, 4, 1), 63))
  np.testing.assert_array_equal(got["histograms"]["sigma"], [2, 2, 3, 4, 6])
  assert got["texts"]["note"] == "hello"
  assert any(t.startswith("_hparams_/") for t in got["tensors"])


@pytest.mark.parametrize("use_clu", [True, False], ids=["default", "tensorboard_fallback"])
def test_writer_just_logging_writes_no_files(tmp_path, use_clu):
  writer = metrics.create_writer(str(tmp_path), just_logging=True, use_clu=use_clu)
  writer.write_scalars(1, {"loss": 1.0})
  writer.write_images(1, {"img": np.zeros((2, 2, 3), np.uint8)})
  writer.close()
  assert _event_files(tmp_path) == []


def test_writer_fallback_logs_scalars(tmp_path, caplog):
  writer = metrics.TensorBoardWriter(str(tmp_path))
  with caplog.at_level(logging.INFO, logger=metrics.__name__):
    writer.write_scalars(7, {"loss": 0.125, "grad_norm": 3.0})
  writer.close()
  assert "[7] grad_norm=3, loss=0.125" in caplog.text


# ------------------------------------------------------------------------------ progress


def test_progress_reporter_on_fake_clock():
  times = iter([0.0, 10.0, 12.0, 15.0, 16.0])
  lines = []
  progress = metrics.ProgressReporter(
    num_steps=1000, batch_size=32, every=100, time_fn=lambda: next(times), print_fn=lines.append
  )
  assert progress(0) is None  # starts the clock at t=0
  out = progress(100)  # 100 steps in 10 s
  assert out == pytest.approx(
    {"perf/steps_per_sec": 10.0, "perf/images_per_sec": 320.0, "perf/eta_seconds": 90.0}
  )
  assert progress(150) is None  # not a reporting step
  out = progress(200)  # 100 steps in 5 s (since t=10)
  assert out["perf/steps_per_sec"] == pytest.approx(20.0)
  assert out["perf/eta_seconds"] == pytest.approx(40.0)
  assert lines == [
    "step 100/1000 (10.0%) | 10 steps/s | 320 img/s | ETA 1m30s",
    "step 200/1000 (20.0%) | 20 steps/s | 640 img/s | ETA 40s",
  ]
  assert metrics.format_duration(3723) == "1h02m03s"


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
  assert str(info.value) == (
    "loss became NaN between steps 1200 and 1300; last good checkpoint is kept at /ckpt/1000"
  )
  assert isinstance(info.value, FloatingPointError)
  assert info.value.step_range == (1200, 1300)


def test_check_finite_reports_every_bad_metric_and_missing_checkpoint():
  bad = {"loss": 1.0, "grad_norm": float("inf"), "profile": np.array([1.0, -np.inf, np.nan])}
  with pytest.raises(metrics.NonFiniteError) as info:
    metrics.check_finite(bad, (0, 100))
  assert info.value.metrics == {"grad_norm": "Inf", "profile": "NaN"}
  assert str(info.value) == (
    "grad_norm became Inf, profile became NaN between steps 0 and 100; "
    "no checkpoint was saved before it"
  )
