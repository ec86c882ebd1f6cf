"""The persistent compilation cache: a second process with the same config loads its
compiled programs from `system.compilation_cache_dir` instead of compiling them again."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs the real command line and prints how many programs came from the persistent cache,
# counted by JAX's own monitoring event for a cache hit.
_DRIVER = """
import atexit, sys
import jax
hits = []
def _on_event(name, **kwargs):
  if name == "/jax/compilation_cache/cache_hits":
    hits.append(name)
jax.monitoring.register_event_listener(_on_event)
atexit.register(lambda: print("CACHE_HITS", len(hits), flush=True))
from absl import app
from infonoise_jax import main
sys.argv = ["infonoise_jax.main"] + sys.argv[1:]
app.run(main.main)
"""


def _run(workdir: pathlib.Path, cache: pathlib.Path) -> tuple[int, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith("XLA_")}
  env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env["XLA_FLAGS"] = os.environ.get("INFONOISE_TEST_XLA_FLAGS", "")  # the session's (conftest)
  proc = subprocess.run(
    [
      sys.executable,
      "-c",
      _DRIVER,
      "--config=configs/test.py",
      f"--workdir={workdir}",
      f"--config.system.compilation_cache_dir={cache}",
      "--config.system.compilation_cache_min_secs=0",
      "--config.train.num_steps=4",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [l for l in proc.stdout.splitlines() if l.startswith("CACHE_HITS")]
  assert lines, proc.stdout[-2000:]
  return int(lines[-1].split()[1]), proc.stderr


def test_second_process_reuses_the_compiled_programs(tmp_path):
  cache = tmp_path / "xla_cache"
  hits, log = _run(tmp_path / "first", cache)
  assert hits == 0  # empty cache: everything compiled
  assert "the step after" in log and "train_steps" not in log  # traced and compiled
  assert len(list((cache / "train_steps").glob("*.pkl"))) == 1  # the step's executable
  entries = [p for p in cache.rglob("*") if p.is_file()]
  assert entries, "the first run wrote nothing to the compilation cache"
  # A fresh run of the same config in another workdir: the step's executable loads from the
  # step store (no trace, no lowering), the small programs from the cache; nothing new is
  # written.
  hits, log = _run(tmp_path / "second", cache)
  assert hits >= 1
  assert f"loaded from {cache / 'train_steps'}" in log
  # Without its stored file the step is traced and comes from the persistent cache; such an
  # executable is not stored (on the CPU it would serialize without its functions).
  for stored in (cache / "train_steps").glob("*.pkl"):
    stored.unlink()
  hits, log = _run(tmp_path / "third", cache)
  assert "traced, loaded from the persistent compilation cache" in log
  assert not list((cache / "train_steps").glob("*.pkl"))
  assert sorted(p for p in cache.rglob("*") if p.is_file()) == sorted(
    p for p in entries if p.parent.name != "train_steps"
  )


def test_empty_folder_turns_the_cache_off(tmp_path):
  import jax
  import ml_collections

  from infonoise_jax import main

  system = ml_collections.ConfigDict(
    {"compilation_cache_dir": "", "compilation_cache_min_secs": 1.0}
  )
  before = jax.config.jax_compilation_cache_dir
  main.configure_compilation_cache(system)
  assert jax.config.jax_compilation_cache_dir == before


def test_the_environment_folder_wins_over_the_default_not_over_a_given_folder(
  tmp_path, monkeypatch
):
  """At the key's default, the training command wrote to ~/.cache even when the environment
  named a cache (a job's, or this test session's: tests' subprocesses filled the user's home)."""
  import jax
  import ml_collections

  from infonoise_jax import mesh

  before = jax.config.jax_compilation_cache_dir
  system = lambda folder: ml_collections.ConfigDict(
    {"compilation_cache_dir": folder, "compilation_cache_min_secs": 0.0}
  )
  try:
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    mesh.configure_compilation_cache(system(mesh.DEFAULT_COMPILATION_CACHE_DIR))
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "env")
    mesh.configure_compilation_cache(system(str(tmp_path / "given")))
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "given")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    mesh.configure_compilation_cache(system(mesh.DEFAULT_COMPILATION_CACHE_DIR))
    want = os.path.expanduser(mesh.DEFAULT_COMPILATION_CACHE_DIR)
    assert jax.config.jax_compilation_cache_dir == want
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
  from configs.default import get_config

  assert get_config().system.compilation_cache_dir == mesh.DEFAULT_COMPILATION_CACHE_DIR


# The schedule-comparison harness, the same way: its programs' cache hits counted in-process.
_HARNESS_DRIVER = (
  _DRIVER.split("from absl import app")[0]
  + """
sys.path.insert(0, "experiments")
import compare_schedules
compare_schedules.main(sys.argv[1:])
"""
)


def test_a_second_harness_process_loads_what_the_first_compiled(tmp_path):
  """A chained call of experiments/compare_schedules.py (a budget run in parts) finds the
  programs the first call compiled in `system.compilation_cache_dir`, given with --set."""
  cache = tmp_path / "xla_cache"
  env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_COMPILATION"))}
  env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env["XLA_FLAGS"] = os.environ.get("INFONOISE_TEST_XLA_FLAGS", "")  # the session's (conftest)

  def harness(out: str) -> int:
    proc = subprocess.run(
      [sys.executable, "-c", _HARNESS_DRIVER, f"--out={tmp_path / out}",
       "--config=configs/test.py", "--steps=2", "--eval_every=2", "--num_samples=16",
       "--seeds=0", "--arms=lognormal", f"--set=system.compilation_cache_dir={cache}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int([l for l in proc.stdout.splitlines() if l.startswith("CACHE_HITS")][-1].split()[1])

  first = harness("first")  # an empty cache: compiled and written there (a program the run
  written = sorted(p for p in cache.rglob("*") if p.is_file())  # builds twice hits the 2nd)
  assert written
  assert harness("second") > first  # the same programs, loaded
  assert sorted(p for p in cache.rglob("*") if p.is_file()) == written  # nothing compiled anew
