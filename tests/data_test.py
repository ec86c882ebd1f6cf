"""Tests for infonoise_jax.data: sources against their raw files, the pipeline's stream laws."""

import gzip
import itertools
import os
import pickle
import re
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
from scipy.special import logsumexp

from configs.default import get_config
from infonoise_jax.data import (
  DevicePrefetcher,
  GaussianMixture,
  Pipeline,
  Prefetcher,
  Source,
  load_source,
  sources,
  synthetic,
)
from infonoise_jax.data import pipeline as pipeline_lib

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def _config(**data):
  c = get_config()
  c.data.update(data)
  return c


def _indexed_source(n: int, image: bool = True) -> Source:
  """Example i is filled with the value i (images (2, 3, 1) so flips are visible)."""
  if image:
    x = np.arange(n, dtype=np.float32)[:, None, None, None] + np.zeros((1, 2, 3, 1), np.float32)
    x[:, :, 0] -= 0.25  # left column marked so a horizontal flip changes the example
    return Source("indexed", (2, 3, 1), n, True, 1.0, array=x)
  x = np.repeat(np.arange(n, dtype=np.float32)[:, None], 2, axis=1)
  return Source("indexed", (2,), n, False, 1.0, array=x)


def _ids(batch_BX: np.ndarray) -> np.ndarray:
  return np.round(batch_BX.reshape(len(batch_BX), -1).max(axis=1)).astype(np.int64)


# ---------------------------------------------------------------- pipeline


def test_batch_matches_reference_stream_of_epoch_permutations():
  n, b, seed = 10, 4, 3
  pipe = Pipeline(_indexed_source(n), b, seed)
  # Reference: concatenate independently seeded epoch permutations, cut into batches.
  stream = np.concatenate([pipeline_lib.epoch_permutation(seed, e, n) for e in range(4)])
  for step in range(9):  # batches straddle epoch boundaries (N not divisible by B)
    np.testing.assert_array_equal(_ids(pipe.batch(step)), stream[step * b : (step + 1) * b])


def test_a_batch_larger_than_the_data_is_warned_and_still_cycles_the_stream(caplog):
  """batch_size 25 on 10 examples (a tiny own file): legal, each example 2-3 times per batch,
  but rarely meant, so a warning names the sizes; a batch that fits says nothing."""
  with caplog.at_level("WARNING"):
    pipe = Pipeline(_indexed_source(10), 25, seed=0)
  assert "train.batch_size=25 is larger than the 10 training examples" in caplog.text
  assert "2.5 epochs per step" in caplog.text
  assert np.array_equal(np.bincount(_ids(pipe.batch(0)), minlength=10) >= 2, np.ones(10, bool))
  caplog.clear()
  with caplog.at_level("WARNING"):
    Pipeline(_indexed_source(10), 10, seed=0)
  assert caplog.text == ""


def test_every_epoch_visits_every_example_once():
  n, b = 48, 8
  pipe = Pipeline(_indexed_source(n), b, seed=0)
  steps = np.arange(3 * n // b).reshape(3, n // b)  # three epochs of steps
  epochs = [np.concatenate([_ids(pipe.batch(int(s))) for s in row]) for row in steps]
  for ids in epochs:
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))
  assert not np.array_equal(epochs[0], epochs[1])  # a fresh order each epoch
  assert not np.array_equal(epochs[0], np.arange(n))


def test_determinism_and_seed_dependence():
  src = _indexed_source(64)
  a, b = Pipeline(src, 16, seed=7), Pipeline(src, 16, seed=7)
  np.testing.assert_array_equal(a.batch(5), b.batch(5))
  np.testing.assert_array_equal(a.batch(5), a.batch(5))
  assert not np.array_equal(a.batch(5), a.batch(6))
  assert not np.array_equal(a.batch(5), Pipeline(src, 16, seed=8).batch(5))


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shares_are_disjoint_slices_of_the_global_batch(process_count):
  for n in (37, 48):  # 48: no batch straddles an epoch, so the example sets are disjoint too
    src = _indexed_source(n)
    whole = Pipeline(src, 16, seed=1, random_flip=True)
    parts = [Pipeline(src, 16, 1, i, process_count, random_flip=True) for i in range(process_count)]
    for step in (0, 2, 5):
      shares = [p.batch(step) for p in parts]
      assert all(len(s) == 16 // process_count for s in shares)
      np.testing.assert_array_equal(np.concatenate(shares), whole.batch(step))
      positions = [set(p.positions(step)) for p in parts]
      assert len(set().union(*positions)) == 16
      if n == 48:
        assert len(set(_ids(np.concatenate(shares)))) == 16


def test_resume_continues_the_same_stream():
  pipe = Pipeline(_indexed_source(23), 8, seed=2)
  with pipe.iterate(0) as it:
    from_start = list(itertools.islice(it, 9))
  with pipe.iterate(4) as it:
    resumed = list(itertools.islice(it, 5))
  fresh = Pipeline(_indexed_source(23), 8, seed=2)  # new process: no shared state
  for k, batch in enumerate(resumed):
    np.testing.assert_array_equal(batch, from_start[4 + k])
    np.testing.assert_array_equal(batch, fresh.batch(4 + k))


def test_random_flip_mirrors_about_half_and_depends_on_step():
  n = 32
  src = _indexed_source(n)
  pipe = Pipeline(src, n, seed=5, random_flip=True)
  flipped = []
  for step in range(4):  # B = N: each step is one epoch
    x = pipe.batch(step)
    orig = src.array[_ids(x)]
    is_flip = np.all(x == orig[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(is_flip | np.all(x == orig, axis=(1, 2, 3)))
    flipped.append(is_flip[np.argsort(_ids(x))])
  frac = np.mean(flipped)
  assert 0.3 < frac < 0.7
  assert not np.array_equal(flipped[0], flipped[1])
  plain = Pipeline(src, n, seed=5).batch(0)  # flips off: the stored examples unchanged
  np.testing.assert_array_equal(plain, src.array[_ids(plain)])


def test_pipeline_validation():
  with pytest.raises(ValueError, match="divisible"):
    Pipeline(_indexed_source(10), 10, 0, 0, 4)
  with pytest.raises(ValueError, match="random_flip"):
    Pipeline(_indexed_source(10, image=False), 4, 0, random_flip=True)
  with pytest.raises(ValueError, match="process_index"):
    Pipeline(_indexed_source(10), 4, 0, 2, 2)


class _RowReader:
  """A lazy reader over an array (picklable, as grain's worker processes need)."""

  def __init__(self, x):
    self.x = x

  def __call__(self, indices_B):
    return self.x[indices_B].copy()


def test_grain_workers_give_the_threads_batches_in_step_order():
  eager = _indexed_source(50)
  lazy = Source("indexed lazily", eager.shape, 50, True, 1.0, reader=_RowReader(eager.array))
  pipe = Pipeline(lazy, 8, seed=3, process_index=1, process_count=2, random_flip=True)
  with pipe.iterate(5, num_workers=2) as batches:
    got = [next(batches) for _ in range(7)]  # steps 5..11, across epoch boundaries
  for step, batch in zip(range(5, 12), got, strict=True):
    np.testing.assert_array_equal(batch, pipe.batch(step))


def test_prefetcher_reraises_and_stops():
  def produce(step):
    if step == 3:
      raise RuntimeError("boom at 3")
    return np.full((2,), step)

  it = Prefetcher(produce, 0, buffer_size=2)
  assert [int(next(it)[0]) for _ in range(3)] == [0, 1, 2]
  with pytest.raises(RuntimeError, match="boom at 3"):
    next(it)
  with pytest.raises(StopIteration):
    next(it)
  before = threading.active_count()
  it = Prefetcher(lambda s: np.zeros(1), 0, buffer_size=1)
  next(it)
  it.close()
  assert threading.active_count() <= before


@pytest.mark.parametrize("num_workers", [0, 2])
def test_device_prefetcher_puts_the_pipelines_batches_on_device_in_order(num_workers):
  import jax

  eager = _indexed_source(50)
  lazy = Source("indexed lazily", eager.shape, 50, True, 1.0, reader=_RowReader(eager.array))
  pipe = Pipeline(lazy if num_workers else eager, 8, seed=3, random_flip=True)
  batches = DevicePrefetcher(pipe.iterate(5, num_workers=num_workers), jax.device_put, 2)
  got = [next(batches) for _ in range(7)]  # steps 5..11, across epoch boundaries
  batches.close()  # stops its thread, then the pipeline's thread or workers
  assert not [t for t in threading.enumerate() if t.name == "data-prefetch"]
  for step, batch in zip(range(5, 12), got, strict=True):
    assert isinstance(batch, jax.Array)
    np.testing.assert_array_equal(np.asarray(batch), pipe.batch(step))


def test_device_prefetcher_reraises_the_pipelines_error():
  def produce(step):
    if step == 2:
      raise RuntimeError("bad file at step 2")
    return np.full((2,), step)

  batches = DevicePrefetcher(Prefetcher(produce, 0, buffer_size=2), lambda x: x + 1, 1)
  assert [int(next(batches)[0]) for _ in range(2)] == [1, 2]
  with pytest.raises(RuntimeError, match="bad file at step 2"):
    next(batches)
  batches.close()


# ---------------------------------------------------------------- sources


def test_digits_matches_sklearn_pixels():
  from sklearn.datasets import load_digits

  raw = load_digits().images
  src = load_source(_config(name="digits"))
  assert src.shape == (8, 8, 1) and src.num_examples == 1797 and src.is_image
  np.testing.assert_allclose(src.array[..., 0], raw / 8.0 - 1.0, atol=1e-6)
  assert src.array.min() == -1.0 and src.array.max() == 1.0
  # Box average to 4x4: each output pixel is the mean of a 2x2 block.
  small = load_source(_config(name="digits", image_size=4)).array
  i, j = 1, 2
  block = raw[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(len(raw), -1) / 8.0 - 1.0
  np.testing.assert_allclose(small[:, i, j, 0], block.mean(axis=1), atol=1e-6)


def test_digits_are_read_without_importing_sklearn_and_equal_its_loader(tmp_path, monkeypatch):
  from sklearn.datasets import load_digits

  from infonoise_jax.data import sources

  ref = load_digits()
  pixels, labels = sources.read_digits()
  np.testing.assert_array_equal(pixels, ref.data)
  np.testing.assert_array_equal(labels, ref.target)
  assert labels.dtype == np.int32 and load_source(_config(name="digits")).labels is not None

  # a scikit-learn laid out otherwise (no such file, or one of other rows): its loader, the
  # same values
  data = tmp_path / "sklearn" / "datasets" / "data"
  data.mkdir(parents=True)
  elsewhere = types.SimpleNamespace(submodule_search_locations=[str(tmp_path / "sklearn")])
  monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: elsewhere)
  for content in (None, "pixel_0,label\n1,2\n", "1,2,3\n4,5,6\n"):
    if content is not None:
      with gzip.open(data / "digits.csv.gz", "wt") as f:
        f.write(content)
    pixels, labels = sources.read_digits()
    np.testing.assert_array_equal(pixels, ref.data)
    np.testing.assert_array_equal(labels, ref.target)
  monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ValueError, match="needs scikit-learn .* pip install scikit-learn"):
    sources.read_digits()
  # a run's start-up does not pay for importing scikit-learn (scipy.stats and more)
  code = (
    "import sys; from infonoise_jax.data import sources; sources.read_digits(); "
    "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout


def test_binarize_and_scale():
  from sklearn.datasets import load_digits

  raw = load_digits().images
  src = load_source(_config(name="digits", binarize=True, scale=0.5))
  assert set(np.unique(src.array)) == {-0.5, 0.5}
  np.testing.assert_array_equal(src.array[..., 0] > 0, raw > 8)
  cont = load_source(_config(name="digits", scale=0.5)).array
  assert cont.min() == -0.5 and cont.max() == 0.5


def _write_idx(path, array_u8):
  header = bytes([0, 0, 8, array_u8.ndim]) + np.array(array_u8.shape, ">u4").tobytes()
  with gzip.open(path, "wb") as f:
    f.write(header + array_u8.tobytes())


def test_fashion_mnist_local_from_idx_files(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
  _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5, dtype=np.uint8))
  src = load_source(_config(name="fashion_mnist_local", split="test", local_dir=str(tmp_path)))
  assert src.shape == (28, 28, 1) and src.num_examples == 5
  np.testing.assert_allclose(src.array[..., 0], images / 127.5 - 1.0, atol=1e-6)
  np.testing.assert_array_equal(src.labels, np.arange(5))
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    load_source(_config(name="fashion_mnist_local", local_dir=str(tmp_path)))  # no train files


@pytest.mark.parametrize("damage", ["truncated", "not gzip", "truncated header"])
def test_damaged_idx_file_is_named(tmp_path, damage):
  images = np.zeros((5, 28, 28), np.uint8)
  path = tmp_path / "t10k-images-idx3-ubyte.gz"
  _write_idx(path, images)
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5, dtype=np.uint8))
  raw = path.read_bytes()
  if damage == "truncated":
    path.write_bytes(raw[: len(raw) // 2])
  elif damage == "not gzip":
    path.write_bytes(b"<html>not the data</html>")
  else:
    with gzip.open(path, "wb") as f:
      f.write(bytes([0, 0, 8, 3, 0, 0]))
  with pytest.raises(ValueError, match=re.escape(str(path)) + ".*dataset-fashion-mnist"):
    load_source(_config(name="fashion_mnist_local", split="test", local_dir=str(tmp_path)))


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_local_debian_package():
  src = load_source(_config(name="fashion_mnist_local", image_size=14))
  assert src.shape == (14, 14, 1) and src.num_examples == 60000
  np.testing.assert_array_equal(np.bincount(src.labels), np.full(10, 6000))  # balanced classes
  assert -1.0 <= src.array.min() < -0.99 and 0.99 < src.array.max() <= 1.0


def test_gaussian_mixture_posterior_mean_matches_tweedie():
  src = load_source(_config(name="gaussian_mixture", num_components=3, dim=4, num_examples=4000))
  mix = src.mixture
  assert src.shape == (4,) and not src.is_image and mix.means_KD.shape == (3, 4)
  # The drawn set follows the mixture: residuals from the labelled means have std mix.std.
  resid = src.array - mix.means_KD[src.labels]
  assert abs(resid.std() - mix.std) < 0.05 * mix.std
  # Tweedie: E[x0|x] = x + sigma^2 grad log p_sigma(x), p_sigma = sum_k w_k N(mu_k, s^2+sigma^2).
  rng = np.random.default_rng(1)
  x_BD, sigma_B = rng.normal(size=(6, 4)), np.array([0.01, 0.05, 0.2, 0.5, 1.0, 5.0])

  def log_p(x_D, sigma):
    var = mix.std**2 + sigma**2
    ll_K = -0.5 * np.sum((x_D - mix.means_KD) ** 2, axis=1) / var - 2 * np.log(2 * np.pi * var)
    return logsumexp(ll_K + np.log(mix.weights_K))

  h = 1e-5
  for x_D, sigma in zip(x_BD, sigma_B, strict=True):
    grad = [(log_p(x_D + h * e, sigma) - log_p(x_D - h * e, sigma)) / (2 * h) for e in np.eye(4)]
    want = x_D + sigma**2 * np.array(grad)
    got = mix.posterior_mean(x_D[None], np.array([sigma]))[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  test = load_source(_config(name="gaussian_mixture", num_components=3, dim=4, split="test"))
  np.testing.assert_array_equal(test.mixture.means_KD, mix.means_KD)
  assert not np.array_equal(test.array[:10], src.array[:10])


def test_single_gaussian_posterior_is_wiener():
  mix = GaussianMixture.make(1, 3, 1.0, 0.3)
  x_BD, sigma_B = np.ones((2, 3)), np.array([0.1, 2.0])
  s2 = mix.std**2
  want = (s2 * x_BD + sigma_B[:, None] ** 2 * mix.means_KD) / (s2 + sigma_B[:, None] ** 2)
  np.testing.assert_allclose(mix.posterior_mean(x_BD, sigma_B), want, rtol=1e-12)


def test_toy2d_shapes():
  board = load_source(_config(name="toy2d", num_examples=2000)).array
  assert board.shape == (2000, 2) and np.abs(board).max() <= 1.0
  cells = np.floor((board + 1.0) / 0.5).astype(int).clip(0, 3)
  assert np.all(cells.sum(axis=1) % 2 == 0)  # only the even cells of the 4x4 board
  ring = load_source(_config(name="toy2d:ring", num_examples=2000, scale=0.5)).array
  assert abs(np.linalg.norm(ring, axis=1).mean() - 0.4) < 0.01
  moons = load_source(_config(name="toy2d:moons")).array
  assert np.abs(moons).max() <= 1.0 and np.abs(moons.mean(axis=0)).max() < 0.1


def test_tfds_mock_cifar10_and_mnist_without_tensorflow():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    cifar = load_source(_config(name="tfds:cifar10"))
    assert cifar.shape == (32, 32, 3) and cifar.num_examples == 12 and cifar.is_image
    ref = tfds.data_source("cifar10", split="train", download=False)
    raw = np.stack([ref[i]["image"] for i in range(12)])
    np.testing.assert_allclose(cifar.array, raw / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(cifar.labels, [ref[i]["label"] for i in range(12)])
    mnist_cfg = _config(name="tfds:mnist", image_size=14, binarize=True, scale=0.5)
    mnist = load_source(mnist_cfg)
    assert mnist.shape == (14, 14, 1) and set(np.unique(mnist.array)) <= {-0.5, 0.5}
    lazy = sources.tfds_source("mnist", mnist_cfg.data, in_memory=False)
    assert lazy.array is None and "lazily" in lazy.describe()
    pipe, eager = Pipeline(lazy, 4, seed=0), Pipeline(mnist, 4, seed=0)
    np.testing.assert_array_equal(pipe.batch(3), eager.batch(3))
    # What a grain worker gets: the reader without its open dataset, which it reopens.
    copy = pickle.loads(pickle.dumps(pipe))
    assert copy.source.reader._ds is None
    np.testing.assert_array_equal(copy.batch(3), eager.batch(3))
    with pytest.raises(ValueError, match="image_key='pixels'"):
      load_source(_config(name="tfds:mnist", image_key="pixels"))
    with pytest.raises(ValueError, match="data.image_size=5"):
      load_source(_config(name="tfds:cifar10", image_size=5))


def test_tfds_errors_never_download(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(FileNotFoundError) as e:
    load_source(_config(name="tfds:cifar10", tfds_data_dir=str(tmp_path)))
  msg = str(e.value)
  assert "never downloads" in msg and str(tmp_path) in msg
  assert f"tfds.builder('cifar10', data_dir='{tmp_path}', file_format='array_record')" in msg
  assert ".download_and_prepare()" in msg
  assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing was fetched
  with pytest.raises(ValueError, match="no dataset 'no_such_set'"):
    load_source(_config(name="tfds:no_such_set"))


def test_config_errors():
  with pytest.raises(ValueError, match=r"data.name='cifar'.*digits.*tfds:<name>"):
    load_source(_config(name="cifar"))
  with pytest.raises(ValueError, match="data.name='toy2d:spiral'"):
    load_source(_config(name="toy2d:spiral"))
  with pytest.raises(ValueError, match="data.split='test'"):
    load_source(_config(name="digits", split="test"))
  with pytest.raises(
    ValueError, match=r"image_size=3.*valid: 0 \(native\) or one of \[1, 2, 4, 8\]"
  ):
    load_source(_config(name="digits", image_size=3))
  with pytest.raises(ValueError, match="vector source"):
    load_source(_config(name="toy2d", image_size=8))
  # Non-square images: data.image_size is the height, the width shrinks by the same factor.
  assert sources.check_image_shape("tfds:x", (32, 16, 3), 0) == (32, 16, 3)
  assert sources.check_image_shape("tfds:x", (32, 16, 3), 8) == (8, 4, 3)
  with pytest.raises(ValueError, match=r"32x12 images .* one of \[8, 16, 32\]"):
    sources.check_image_shape("tfds:x", (32, 12, 3), 4)  # 12 is not divisible by 32 / 4
  with pytest.raises(ValueError, match="fixed"):
    sources.check_image_shape("tfds:x", (None, None, 3), 0)
  with pytest.raises(ValueError, match="component_std"):
    load_source(_config(name="gaussian_mixture", component_std=0.0))
  with pytest.raises(ValueError, match="toy2d kind"):
    synthetic.toy2d("spiral", 4, 0)
