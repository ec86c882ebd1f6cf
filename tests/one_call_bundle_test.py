"""experiments/one_call_bundle.py through evidence.sh's `bundle` and `unbundle`: the two-level
copy trains and scores binarized runs on exactly the data the original gives them, the weights
come back byte for byte, and the copy is refused where it is not the data (continuous runs, an
unpack over the original)."""

import gzip
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from infonoise_jax.data import sources
from infonoise_jax.validation import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import one_call_bundle  # noqa: E402


def _write_idx(path, array_u8):
  header = bytes([0, 0, 8, array_u8.ndim]) + np.array(array_u8.shape, ">u4").tobytes()
  with gzip.open(path, "wb") as f:
    f.write(header + array_u8.tobytes())


def _fashion(folder: pathlib.Path, n: int = 40) -> None:
  folder.mkdir(parents=True)
  u_NHW = np.random.default_rng(3).integers(0, 256, (n, 28, 28), dtype=np.uint8)
  u_NHW[0, 0, :4] = (126, 127, 128, 129)  # both sides of the threshold
  _write_idx(folder / "train-images-idx3-ubyte.gz", u_NHW)
  _write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)


def _load(folder, binarize: bool):
  config = load_config_file(ROOT / "configs" / "default.py", "fashion")
  config.data.local_dir = str(folder)
  config.data.binarize = binarize
  return sources.load_source(config)


def _evidence(data, *args, **env):
  env = {**os.environ, "DATA": str(data), "PYTHON": sys.executable, **env}
  return subprocess.run(
    ["bash", str(ROOT / "experiments" / "evidence.sh"), *args],
    env=env, capture_output=True, text=True, cwd=ROOT,
  )  # fmt: skip


def test_two_level_is_the_half_range_threshold():
  u = np.arange(256, dtype=np.uint8)
  np.testing.assert_array_equal(one_call_bundle.two_level(u), np.where(u >= 128, 255, 0))


def test_bundle_and_unbundle_give_binarized_runs_the_same_data_and_the_weights(tmp_path):
  data = tmp_path / "data"
  _fashion(data / "fm")
  weights = {"mixed/conv/kernel": np.arange(-300, 300, dtype=np.int16).reshape(20, 30)}
  np.savez(data / "inception_int16.npz", **weights)
  r = _evidence(data, "bundle")
  assert r.returncode == 0, r.stderr
  assert "bundle:" in r.stdout and "MiB" in r.stdout
  os.rename(data / "inception_int16.npz", tmp_path / "original.npz")  # as on a bare machine

  r = _evidence(data, "unbundle")
  assert r.returncode == 0, r.stderr
  copy = data / "fm_two_level"
  assert (copy / "TWO_LEVEL").exists()
  assert (data / "inception_int16.npz").read_bytes() == (tmp_path / "original.npz").read_bytes()
  a, b = _load(data / "fm", True), _load(copy, True)
  np.testing.assert_array_equal(a.array, b.array)
  np.testing.assert_array_equal(a.labels, b.labels)
  assert (a.shape, a.scale, a.binarized) == (b.shape, b.scale, b.binarized)
  assert set(np.unique(sources.read_idx(str(copy / "train-images-idx3-ubyte.gz")))) == {0, 255}
  # Continuous, the copy is other data (two levels), so the loader and evidence.sh refuse it.
  original = sources.read_idx(str(data / "fm" / "train-images-idx3-ubyte.gz"))
  assert not np.array_equal(original, sources.read_idx(str(copy / "train-images-idx3-ubyte.gz")))
  with pytest.raises(ValueError, match=r"two-level copy.*data\.binarize=True"):
    _load(copy, False)
  r = _evidence(data, "fashion", "continuous", "lognormal", FM=str(copy))
  assert r.returncode == 2 and "two-level" in r.stderr and "FM" in r.stderr, r.stderr
  r = _evidence(data, "fashion", "binarized", "lognormal", FM=str(copy), PYTHON="echo")
  assert r.returncode == 0 and f"--set=data.local_dir={copy}" in r.stdout, r.stderr


def test_unpack_never_overwrites_the_original_and_names_a_missing_bundle(tmp_path):
  _fashion(tmp_path / "fm")
  np.savez(tmp_path / "w.npz", k=np.zeros(3, np.int16))
  one_call_bundle.pack(str(tmp_path / "fm"), str(tmp_path / "w.npz"), str(tmp_path / "b"))
  before = (tmp_path / "fm" / "train-images-idx3-ubyte.gz").read_bytes()
  with pytest.raises(SystemExit, match="holds Fashion-MNIST already"):
    one_call_bundle.unpack(str(tmp_path / "b"), str(tmp_path / "fm"), str(tmp_path / "w2.npz"))
  assert (tmp_path / "fm" / "train-images-idx3-ubyte.gz").read_bytes() == before
  os.remove(tmp_path / "b" / one_call_bundle.WEIGHTS)
  with pytest.raises(SystemExit, match="inception_int16.npz.xz"):
    one_call_bundle.unpack(str(tmp_path / "b"), str(tmp_path / "c"), str(tmp_path / "w2.npz"))
  r = _evidence(tmp_path / "nodata", "unbundle")
  assert r.returncode == 2 and "evidence.sh bundle" in r.stderr, r.stderr
