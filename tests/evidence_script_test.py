"""experiments/evidence.sh refuses bad arguments and missing data with its usage or the fix,
before starting Python (the GPU runs themselves are recorded in experiments/RESULTS.md)."""

import os
import pathlib
import subprocess

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "evidence.sh"


def _run(tmp_path, *args):
  env = {**os.environ, "DATA": str(tmp_path / "data"), "OUT": str(tmp_path / "out")}
  env["PYTHON"] = "/bin/false"  # any Python start would fail with rc 1, not 2 with a message
  return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
  "args, says",
  [
    ((), "evidence.sh prepare"),
    (("train",), "evidence.sh sequences dna"),
    (("sequences", "rna"), "unknown domain 'rna': dna or text"),
    (("sequences", "dna"), "run 'bash experiments/evidence.sh prepare' first"),
    (("fashion", "binarized"), "usage: evidence.sh fashion"),
    (("fashion", "binarized", "lognormal"), "missing"),
    (("fid", "binarized", "x.npz"), "the FID weights"),
    (("report", "dir"), "usage: evidence.sh report"),
  ],
)
def test_bad_arguments_and_missing_data_stop_with_the_fix(tmp_path, args, says):
  r = _run(tmp_path, *args)
  assert r.returncode != 0
  assert says in r.stderr, r.stderr
  assert not (tmp_path / "out").exists()  # nothing started, nothing written
