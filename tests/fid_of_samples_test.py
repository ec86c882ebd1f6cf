"""experiments/fid_of_samples.py without the real Inception weights.

The scoring logic runs with a cheap projection in place of Inception; the command line runs
end to end on fake Fashion-MNIST IDX files with random Inception parameters (the wiring
only: random-parameter features say nothing about image quality).
"""

import gzip
import json
import os
import sys

import numpy as np
import pytest
from flax import traverse_util

from infonoise_jax.data import sources
from infonoise_jax.evaluation import fid, inception
from infonoise_jax.validation import load_config_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import fid_of_samples  # noqa: E402


def _projection(images_NHWC: np.ndarray) -> np.ndarray:
  """Stand-in for Inception: a fixed random projection of the flattened images."""
  flat = np.asarray(images_NHWC, np.float64).reshape(len(images_NHWC), -1)
  return flat @ np.random.default_rng(99).normal(size=(flat.shape[1], 6)) / 255.0


class Counting:
  """A feature function and a train-image loader that count their use."""

  def __init__(self, train_u8: np.ndarray):
    self.train_u8, self.loads, self.extractors, self.images = train_u8, 0, 0, 0

  def load(self) -> np.ndarray:
    self.loads += 1
    return self.train_u8

  def make_extractor(self):
    self.extractors += 1

    def extract(x):
      self.images += len(x)
      return _projection(x)

    return extract


_config = fid_of_samples.reference_config  # the data config a reference is read with


def _lines(path) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_parse_key():
  assert fid_of_samples.parse_key("infonoise_pinned__seed2__step4000") == (
    "infonoise_pinned",
    2,
    4000,
  )
  assert fid_of_samples.parse_key("a__b__seed0__step1") == ("a__b", 0, 1)
  for bad in ("lognormal_seed0_step1", "x__seed0", "x__seedA__step1", "__seed0__step1"):
    with pytest.raises(ValueError, match="<arm>__seed<k>__step<N>"):
      fid_of_samples.parse_key(bad)


def test_batches_report_progress_every_1000_images():
  lines = []
  chunks = list(fid_of_samples.batches(np.zeros((2500, 1)), 300, "ref", lines.append))
  assert [len(c) for c in chunks] == [300] * 8 + [100]
  assert [line.split(",")[0] for line in lines] == ["ref: 900/2500 images", "ref: 1800/2500 images"]
  assert list(fid_of_samples.batches(np.zeros((5, 1)), 2)) and not lines[2:]


def test_self_fid_zero_floor_cache_and_append_only(tmp_path):
  rng = np.random.default_rng(0)
  train = rng.integers(100, 156, (130, 5, 5, 1), dtype=np.uint8)  # grey, low contrast
  ref_idx, _ = fid_of_samples.split_indices(len(train), 60)
  real = train[ref_idx]  # exactly the reference subset, in another order
  noisy = np.clip(real + rng.normal(0, 40, real.shape), 0, 255).astype(np.uint8)
  samples = tmp_path / "samples_continuous.npz"
  np.savez_compressed(samples, real__seed0__step7=real, noisy__seed3__step7=noisy)
  out = str(tmp_path / "fid.jsonl")
  c = Counting(train)
  kw = dict(data_digest="abc", reference_num=60, batch_size=16, log=lambda s: None)

  new = fid_of_samples.score([str(samples)], out, c.make_extractor, c.load, **kw)
  by_key = {r["key"]: r for r in _lines(out)}
  assert new == _lines(out) and sorted(by_key) == [
    "floor",
    "noisy__seed3__step7",
    "real__seed0__step7",
  ]
  r, n, f = by_key["real__seed0__step7"], by_key["noisy__seed3__step7"], by_key["floor"]
  assert (r["kind"], r["arm"], r["seed"], r["step"], r["num"]) == ("fid", "real", 0, 7, 60)
  assert (n["arm"], n["seed"]) == ("noisy", 3)
  assert r["fid"] < 1e-6  # the reference set against its own statistics
  assert f["kind"] == "floor" and f["num"] == 60 and f["fid"] > 100 * max(r["fid"], 1e-9)
  assert n["fid"] > 10 * f["fid"]
  assert r["reference"] == "fashion" and r["reference_num"] == 60 and r["binarize"] is False
  assert r["reference_data"] == "abc"
  assert os.path.exists(tmp_path / "fid_ref_fashion_abc_train_60.npz")
  assert c.images == 60 + 60 + 60 + 60  # reference, floor, two arrays
  # Each set's two halves scored too (its draw noise, docs/fid.md), as computed directly.
  ref = fid.stats_of_features(_projection(train[np.sort(ref_idx)]))
  halves = [fid.stats_of_features(_projection(x)) for x in (noisy[:30], noisy[30:])]
  np.testing.assert_allclose(n["fid_halves"], [fid.frechet_distance(h, ref) for h in halves])
  assert len(r["fid_halves"]) == len(f["fid_halves"]) == 2

  # Rerun: nothing to compute, nothing loaded or appended.
  assert fid_of_samples.score([str(samples)], out, c.make_extractor, c.load, **kw) == []
  assert len(_lines(out)) == 3 and (c.loads, c.extractors) == (1, 1)

  # --num=20 is another measurement: two arrays and a floor at 20; reference from the cache.
  new = fid_of_samples.score([str(samples)], out, c.make_extractor, c.load, num=20, **kw)
  assert sorted((x["key"], x["num"]) for x in new) == [
    ("floor", 20),
    ("noisy__seed3__step7", 20),
    ("real__seed0__step7", 20),
  ]
  assert c.images == 240 + 3 * 20 and len(_lines(out)) == 6

  # Other content under a name already scored is refused, before anything is computed.
  np.savez_compressed(samples, real__seed0__step7=noisy, noisy__seed3__step7=noisy)
  with pytest.raises(ValueError, match="other content"):
    fid_of_samples.score([str(samples)], out, c.make_extractor, c.load, **kw)
  np.savez_compressed(samples, real_seed0=real)
  with pytest.raises(ValueError, match="not '<arm>__seed<k>__step<N>'"):
    fid_of_samples.score([str(samples)], out, c.make_extractor, c.load, **kw)
  assert len(_lines(out)) == 6 and c.extractors == 2


def test_latest_step_first_with_the_arms_interleaved(tmp_path):
  """A scoring cut short keeps every arm's latest models, not one file's every array."""
  rng = np.random.default_rng(0)
  train = rng.integers(0, 256, (40, 4, 4, 1), dtype=np.uint8)
  x = lambda: rng.integers(0, 256, (6, 4, 4, 1), dtype=np.uint8)
  paths = []
  for arm in ("b_arm", "a_arm"):  # files named against the order
    paths.append(str(tmp_path / f"final_{arm}.npz"))
    np.savez_compressed(
      paths[-1], **{f"{arm}__seed{s}__step{t}": x() for s in (1, 0) for t in (5, 10)}
    )
  out = str(tmp_path / "fid.jsonl")
  c = Counting(train)
  new = fid_of_samples.score(
    paths, out, c.make_extractor, c.load, "abc", reference_num=20, log=lambda s: None
  )
  got = [(r["step"], r["seed"], r["arm"]) for r in new if r["kind"] == "fid"]
  assert got == [(t, s, a) for t in (10, 5) for s in (0, 1) for a in ("a_arm", "b_arm")]


def _write_idx(path, array_u8):
  header = bytes([0, 0, 8, array_u8.ndim]) + np.array(array_u8.shape, ">u4").tobytes()
  with gzip.open(path, "wb") as f:
    f.write(header + array_u8.tobytes())


def _fake_fashion(folder, n: int) -> np.ndarray:
  u_NHW = np.random.default_rng(1).integers(0, 256, (n, 28, 28), dtype=np.uint8)
  _write_idx(folder / "train-images-idx3-ubyte.gz", u_NHW)
  _write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(n, np.uint8))
  return u_NHW[..., None]


def test_binarized_reference_is_the_data_rule(tmp_path):
  raw = _fake_fashion(tmp_path, 7)
  np.testing.assert_array_equal(
    fid_of_samples.train_images(_config("fashion", False, str(tmp_path))), raw
  )
  binarized = fid_of_samples.train_images(_config("fashion", True, str(tmp_path)))
  np.testing.assert_array_equal(binarized, np.where(raw > 127.5, 255, 0))  # data.binarize


def test_other_data_folders_get_their_own_reference_and_records(tmp_path, monkeypatch):
  """The reference cache (fid_ref_fashion_train_<n>) and the records a rerun skips ignored
  --data_dir: a second folder of other IDX files was skipped as done (or scored against the
  first's statistics). Both are keyed by the train images file's digest: other files compute
  their own, the same files in another folder reuse them."""
  monkeypatch.setattr(fid_of_samples, "make_extractor", lambda *_: _projection)
  folders = {k: tmp_path / k for k in ("a", "b", "copy_of_a")}
  for f in folders.values():
    f.mkdir()
  _fake_fashion(folders["a"], 40)
  _write_idx(folders["b"] / "train-images-idx3-ubyte.gz", np.full((40, 28, 28), 7, np.uint8))
  _write_idx(folders["b"] / "train-labels-idx1-ubyte.gz", np.zeros(40, np.uint8))
  for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
    (folders["copy_of_a"] / name).write_bytes((folders["a"] / name).read_bytes())
  samples = tmp_path / "final_continuous_x.npz"
  np.savez_compressed(samples, x__seed0__step1=_fake_fashion(tmp_path, 8))
  argv = [f"--samples={samples}", f"--out={tmp_path / 'fid.jsonl'}", "--reference_num=20"]
  new = {k: fid_of_samples.main([*argv, f"--data_dir={f}"]) for k, f in folders.items()}
  assert len(new["b"]) == len(new["a"]) == 2  # a floor and the array, each data folder
  assert new["b"][0]["fid"] != new["a"][0]["fid"]  # against b's own statistics
  assert new["copy_of_a"] == []  # the same files elsewhere: their records are done
  digests = [fid_of_samples.reference_data("fashion", str(folders[k])) for k in ("a", "b")]
  assert [r["reference_data"] for r in new["a"] + new["b"]] == [d for d in digests for _ in "fx"]
  assert sorted(p.name for p in tmp_path.glob("fid_ref_*")) == sorted(
    f"fid_ref_fashion_{d}_train_20.npz" for d in digests
  )
  assert digests[0] == fid_of_samples.reference_data("fashion", str(folders["copy_of_a"]))


def test_command_line_with_random_inception(tmp_path, capsys):
  train = _fake_fashion(tmp_path, 12)
  rng = np.random.default_rng(2)
  params = {}
  for k, shape in inception.param_shapes().items():
    if k.endswith("kernel"):
      params[k] = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape).astype(np.float32)
    else:
      params[k] = np.ones(shape, np.float32) if k.endswith("var") else np.zeros(shape, np.float32)
  weights = tmp_path / "random_inception.npz"
  np.savez(weights, **params)
  assert traverse_util.flatten_dict(inception.load_params(str(weights)), sep="/").keys() == (
    params.keys()
  )
  samples = tmp_path / "samples_continuous.npz"
  np.savez_compressed(samples, a__seed0__step9=train[:3], b__seed1__step9=train[3:6])
  out = tmp_path / "fid.jsonl"
  argv = [
    f"--samples={samples}",
    f"--out={out}",
    "--reference_num=6",
    "--batch_size=8",
    f"--weights={weights}",
    f"--data_dir={tmp_path}",
  ]
  new = fid_of_samples.main(argv)
  assert [(r["kind"], r["key"], r["num"]) for r in new] == [
    ("floor", "floor", 3),
    ("fid", "a__seed0__step9", 3),
    ("fid", "b__seed1__step9", 3),
  ]
  assert all(np.isfinite(r["fid"]) and r["fid"] >= 0 for r in new)
  digest = fid_of_samples.reference_data("fashion", str(tmp_path))
  assert os.path.exists(tmp_path / f"fid_ref_fashion_{digest}_train_6.npz")
  assert "Feature-extractor rate:" in capsys.readouterr().out
  assert fid_of_samples.main(argv) == [] and len(_lines(out)) == 3


def test_samples_of_own_images_are_scored_against_those_images(tmp_path, monkeypatch):
  """A run on your own images (data.name='images') had only Fashion-MNIST to be scored
  against: 28x28 gray samples got a Fashion FID without a word. --reference=images reads the
  run's data.path through the trainer's loader, its statistics and records keyed by the
  trainer's digest of those files."""
  monkeypatch.setattr(fid_of_samples, "make_extractor", lambda *_: _projection)
  rng = np.random.default_rng(5)
  own = {k: rng.integers(0, top, (30, 6, 10, 3), np.uint8) for k, top in (("a", 256), ("b", 99))}
  for k, x in own.items():
    np.save(tmp_path / f"{k}.npy", x)
  samples = tmp_path / "final_continuous_x.npz"
  np.savez_compressed(samples, x__seed0__step1=own["a"][:8])
  argv = [f"--samples={samples}", f"--out={tmp_path / 'fid.jsonl'}", "--reference_num=20"]
  new = {k: fid_of_samples.main([*argv, "--reference=images", f"--data_path={tmp_path / k}.npy"])
         for k in own}  # fmt: skip
  digests = [sources.own_images_fingerprint(str(tmp_path / f"{k}.npy")) for k in own]
  assert [(r["reference"], r["reference_data"]) for r in new["a"] + new["b"]] == [
    ("images", d) for d in digests for _ in "fx"
  ]
  assert new["a"][1]["fid"] < new["b"][1]["fid"]  # a's images, against a's and b's statistics
  assert sorted(p.name for p in tmp_path.glob("fid_ref_*")) == sorted(
    f"fid_ref_images_{d}_train_20.npz" for d in digests
  )
  for bad in (["--reference=images"], [f"--data_path={tmp_path / 'a.npy'}"],
              ["--reference=images", f"--data_path={tmp_path / 'gone.npy'}"]):  # fmt: skip
    with pytest.raises(SystemExit):
      fid_of_samples.parse([*argv, *bad])


def _save_as_the_harness(folder, data_config, arrays: dict) -> str:
  """A samples file as compare_schedules --save_samples writes it, with its data record."""
  import types

  import compare_schedules

  args = types.SimpleNamespace(samples_dir=str(folder), out=str(folder))
  identity = sources.data_identity(data_config)
  compare_schedules.save_final_samples(args, "continuous", "x", arrays, identity=identity)
  return compare_schedules.samples_path(args, "continuous", "x")


def _count_work(monkeypatch) -> dict:
  """Counts the extractors built and the reference images read (the work a refusal must come
  before); the extractor is the cheap projection, the images are read for real."""
  work = {"extractors": 0, "loads": 0}
  real_train_images = fid_of_samples.train_images

  def extractor(*_):
    work["extractors"] += 1
    return _projection

  def train_images(*a):
    work["loads"] += 1
    return real_train_images(*a)

  monkeypatch.setattr(fid_of_samples, "make_extractor", extractor)
  monkeypatch.setattr(fid_of_samples, "train_images", train_images)
  return work


def test_samples_of_other_data_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
  """The samples file did not say what its samples were trained on: forgetting
  --reference=images scored a run on your own 28x28 gray images against Fashion-MNIST, and
  binarized samples scored without --binarize (or the reverse) went through, without a word.
  compare_schedules now records the data (sources.data_identity); a mismatch with the
  reference asked for is refused, naming both and the flags, before the extractor is built
  or any image read; files without the record are scored as before."""
  work = _count_work(monkeypatch)
  fashion, other, mine, copy = (tmp_path / k for k in ("fashion", "other", "mine", "copy"))
  for f in (fashion, other, mine, copy):
    f.mkdir()
  train = _fake_fashion(fashion, 40)
  _write_idx(other / "train-images-idx3-ubyte.gz", np.full((40, 28, 28), 7, np.uint8))
  _write_idx(other / "train-labels-idx1-ubyte.gz", np.zeros(40, np.uint8))
  own = np.random.default_rng(3).integers(0, 99, (40, 28, 28, 1), np.uint8)  # 28x28 gray
  np.save(mine / "own.npy", own)
  out = tmp_path / "fid.jsonl"
  argv = lambda path, *flags: [f"--samples={path}", f"--out={out}", "--reference_num=20", *flags]
  fashion_cfg = fid_of_samples.reference_config("fashion", False, str(fashion)).data
  own_cfg = fid_of_samples.reference_config("images", False, data_path=str(mine / "own.npy")).data
  binarized_cfg = fid_of_samples.reference_config("fashion", True, str(fashion)).data

  refused = [  # (samples' data, flags, what the error names)
    (own_cfg, [f"--data_dir={fashion}"], ["your own images", "--reference=images", "own.npy"]),
    (fashion_cfg, ["--reference=images", f"--data_path={mine / 'own.npy'}"],
     ["Fashion-MNIST", f"--reference=fashion --data_dir={fashion}"]),
    (binarized_cfg, [f"--data_dir={fashion}"], ["binarized", "--binarize"]),
    (fashion_cfg, [f"--data_dir={fashion}", "--binarize"], ["not binarized", "without --binarize"]),
    (fashion_cfg, [f"--data_dir={other}"], [f"--data_dir={fashion}", "digest"]),
  ]  # fmt: skip
  for i, (cfg, flags, names) in enumerate(refused):
    path = _save_as_the_harness(tmp_path / f"s{i}", cfg, {"x__seed0__step1": train[:8]})
    with pytest.raises(ValueError, match="trained on") as e:
      fid_of_samples.main(argv(path, *flags))
    assert all(n in str(e.value) for n in names), (str(e.value), names)
  data_cfg = load_config_file(str(fid_of_samples.DEFAULT_CONFIG_PATH)).data  # digits
  path = _save_as_the_harness(tmp_path / "digits", data_cfg, {"x__seed0__step1": train[:8]})
  with pytest.raises(ValueError, match="data.name='digits'"):
    fid_of_samples.main(argv(path, f"--data_dir={fashion}"))
  # The samples.npz of a run or of the sample command (sample_files.write_samples, with its
  # data record): pointed at evaluate, not a chain of flag fixes ending in bad array names.
  from infonoise_jax.sample_files import data_record, write_samples

  write_samples(
    str(tmp_path / "sampled"), train[:8] / 127.5 - 1, 1.0, True, step=4, **data_record(fashion_cfg)
  )
  with pytest.raises(ValueError, match=r"samples.npz of a run or of .*infonoise_jax.evaluate"):
    fid_of_samples.main(argv(tmp_path / "sampled" / "samples.npz", f"--data_dir={fashion}"))
  assert work == {"extractors": 0, "loads": 0} and not out.exists()

  # The matching flags score them; so do the same own images copied elsewhere (another
  # folder and file times, so another digest: matched by name and size).
  ok = [
    (own_cfg, ["--reference=images", f"--data_path={mine / 'own.npy'}"]),
    (binarized_cfg, [f"--data_dir={fashion}", "--binarize"]),
    (fashion_cfg, [f"--data_dir={fashion}"]),
  ]
  for i, (cfg, flags) in enumerate(ok):
    path = _save_as_the_harness(tmp_path / f"ok{i}", cfg, {"x__seed0__step1": train[:8]})
    assert [r["kind"] for r in fid_of_samples.main(argv(path, *flags))] == ["floor", "fid"]
  np.save(copy / "own.npy", own)
  os.utime(copy / "own.npy", ns=(1, 1))
  path = _save_as_the_harness(tmp_path / "ok3", own_cfg, {"x__seed0__step1": own[:8]})
  new = fid_of_samples.main(argv(path, "--reference=images", f"--data_path={copy / 'own.npy'}"))
  assert [r["kind"] for r in new] == ["floor", "fid"]
  assert "names and sizes match" in capsys.readouterr().out

  # A file without the record (written before it was kept) is scored as asked, with a word.
  old = tmp_path / "final_continuous_old.npz"
  np.savez_compressed(old, x__seed0__step1=own[:8])
  assert len(fid_of_samples.main(argv(old, f"--data_dir={fashion}"))) == 1  # floor done
  assert "does not record the data" in capsys.readouterr().out


def test_samples_of_a_resized_run_are_scored_with_image_size(tmp_path, monkeypatch):
  """A run trained with data.image_size set (its loader box-averages the images) could not be
  scored: the reference was read at native size and refused on the shape. --image_size
  resizes the reference through the same loader (its cache and lines record it); a size that
  does not fit the samples is refused before the reference is read or the network built,
  naming the --image_size that fits (from the file's data record, or the samples' height)."""
  real_train_images = fid_of_samples.train_images  # uncounted
  work = _count_work(monkeypatch)
  own = np.random.default_rng(3).integers(0, 256, (40, 28, 28, 1), np.uint8)
  np.save(tmp_path / "own.npy", own)
  data = ["--reference=images", f"--data_path={tmp_path / 'own.npy'}"]
  resized = real_train_images(_config("images", False, "", str(tmp_path / "own.npy"), 14))
  assert resized.shape == (40, 14, 14, 1)  # the loader's box average
  cfg = fid_of_samples.reference_config("images", False, data_path=str(tmp_path / "own.npy"))
  cfg.data.image_size = 14
  path = _save_as_the_harness(tmp_path / "s", cfg.data, {"x__seed0__step1": resized[:8]})
  out = tmp_path / "fid.jsonl"
  argv = lambda path, *flags: [f"--samples={path}", f"--out={out}", "--reference_num=20", *flags]
  with pytest.raises(ValueError, match=r"at data.image_size=14, .* native size; .*--image_size=14"):
    fid_of_samples.main(argv(path, *data))
  old = tmp_path / "final_continuous_old.npz"  # no data record: the samples' height tells
  np.savez_compressed(old, x__seed0__step1=resized[:8])
  with pytest.raises(ValueError, match=r"height 14, but --image_size=7: .*\(--image_size=14 if"):
    fid_of_samples.main(argv(old, *data, "--image_size=7"))
  assert work == {"extractors": 0, "loads": 0} and not out.exists()
  with pytest.raises(ValueError, match=r"reference images \(28, 28, 1\); .* --image_size=14"):
    fid_of_samples.main(argv(old, *data))
  assert work == {"extractors": 0, "loads": 1}

  new = fid_of_samples.main(argv(path, *data, "--image_size=14"))
  assert [(r["kind"], r["image_size"]) for r in new] == [("floor", 14), ("fid", 14)]
  digest = sources.own_images_fingerprint(str(tmp_path / "own.npy"))
  assert (tmp_path / f"fid_ref_images_{digest}_train_20_size14.npz").exists()
  assert fid_of_samples.main(argv(old, *data, "--image_size=14"))[0]["fid"] == new[1]["fid"]


def test_samples_of_a_tfds_set_are_scored_against_that_set(tmp_path, monkeypatch):
  """A run on a tfds image set (data.name='tfds:<name>') had no reference: its samples were
  refused. --reference=tfds:<name> reads the set through the trainer's loader, lazily (only the
  reference subset and the floor images), keyed by the digest of the tfds folder the run read
  (--data_dir, its data.tfds_data_dir); samples of the set in another folder are refused with
  the flags that score them."""
  tfds = pytest.importorskip("tensorflow_datasets")
  monkeypatch.setattr(fid_of_samples, "make_extractor", lambda *_: _projection)
  with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
    split = tfds.data_source("mnist", split="train", download=False)
    raw = np.stack([split[i]["image"] for i in range(30)])
    lazy = fid_of_samples.train_images(_config("tfds:mnist", False))
    assert isinstance(lazy, fid_of_samples.SourceImages) and lazy.shape == (30, 28, 28, 1)
    np.testing.assert_array_equal(lazy[np.array([3, 1])], raw[[3, 1]])
    cfg = fid_of_samples.reference_config("tfds:mnist", False)
    path = _save_as_the_harness(tmp_path / "s", cfg.data, {"x__seed0__step1": raw[:8]})
    out = tmp_path / "fid.jsonl"
    argv = [f"--samples={path}", f"--out={out}", "--reference_num=12"]
    with pytest.raises(ValueError, match=r"tfds set mnist.* with --reference=tfds:mnist"):
      fid_of_samples.main(argv)  # the default reference, Fashion-MNIST
    new = fid_of_samples.main([*argv, "--reference=tfds:mnist"])
    digest = sources.tfds_dir_fingerprint("")
    assert [(r["kind"], r["reference"], r["reference_data"]) for r in new] == [
      (kind, "tfds:mnist", digest) for kind in ("floor", "fid")
    ]
    ref_idx, rest_idx = fid_of_samples.split_indices(30, 12)
    stats = lambda x: fid.compute_stats([x], _projection)
    ref = stats(raw[np.sort(ref_idx)])
    want = [fid.frechet_distance(stats(x), ref) for x in (raw[rest_idx[:8]], raw[:8])]
    np.testing.assert_allclose([r["fid"] for r in new], want, rtol=1e-6)
    assert [p.name for p in tmp_path.glob("fid_ref_*")] == [
      f"fid_ref_tfds_mnist_{digest}_train_12.npz"
    ]
    other = tmp_path / "other_tfds"
    cfg.data.tfds_data_dir = str(other)
    path = _save_as_the_harness(tmp_path / "o", cfg.data, {"x__seed0__step1": raw[:8]})
    with pytest.raises(ValueError, match=f"--reference=tfds:mnist --data_dir={other} "):
      fid_of_samples.main([f"--samples={path}", f"--out={out}", "--reference=tfds:mnist"])
  for bad in (["--reference=cifar10"], ["--image_key=pixels"]):
    with pytest.raises(SystemExit):
      fid_of_samples.parse(["--samples=x.npz", "--out=o.jsonl", *bad])


def test_samples_that_are_missing_or_not_npz_are_named_in_parse(tmp_path, capsys):
  """A mistyped --samples path (a FileNotFoundError traceback) or the harness's results.jsonl
  given as samples ("contains pickled (object) data") is one line before any work."""
  rec = tmp_path / "results.jsonl"
  rec.write_text("{}\n")
  for given, says in (
    (str(tmp_path / "final_x.npz"), "--samples: no such file"),
    (str(rec), "is not an .npz of samples"),
    ("", "--samples: no such file (none given)"),
  ):
    with pytest.raises(SystemExit):
      fid_of_samples.parse([f"--samples={given}", f"--out={tmp_path / 'o.jsonl'}"])
    assert says in capsys.readouterr().err
