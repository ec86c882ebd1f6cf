"""Test setup: 8 fake CPU devices, before any JAX backend is initialised, and one persistent
compilation cache for the whole test session.

Many tests build the same small programs (the digits step, the Inception extractor, the
samplers), in this process and in the commands they start; JAX's persistent cache, keyed by
the lowered program, compiles each once per session. The folder is new for every session, so
no test can see programs of an earlier run: the process pytest starts in makes it (and removes
it at exit) before pytest-xdist starts its workers, which inherit it through the environment
and share it, as do the subprocesses tests start. A test of the cache points JAX at its own
folder.

XLA's optimizations are off (`JAX_DISABLE_MOST_OPTIMIZATIONS=1`, inherited by subprocesses):
the tests run small programs a few times each, so compiling dominates, and an unoptimized
compile cut the suite on 2 cores from 14.1 to 12.3 minutes with every test passing unchanged
(golden values included). `JAX_DISABLE_MOST_OPTIMIZATIONS=0 pytest tests` runs the suite on
optimized programs, as users get them.

XLA:CPU also emits its kernels the older way (`--xla_cpu_use_fusion_emitters=false`, one
codegen thread per program): it compiles the tests' programs in about two thirds of the time
(the digits and small U-Net steps, the Inception extractor), and runs them as fast or faster.
The flags are added to XLA_FLAGS from INFONOISE_TEST_XLA_FLAGS, which the commands tests start
inherit; `INFONOISE_TEST_XLA_FLAGS= pytest tests` (empty) compiles with XLA's own emitters.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# numpy's BLAS on one thread per process (set before numpy loads; workers and subprocesses
# inherit it): the workers already fill every core, and a 2048 x 2048 FID matrix function
# whose second thread spins for a busy core took 10-21 s of CPU against ~3 s on one thread.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault(
  "INFONOISE_TEST_XLA_FLAGS",
  "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1",
)
if os.environ["INFONOISE_TEST_XLA_FLAGS"] not in os.environ.get("XLA_FLAGS", ""):  # workers: set
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " " + os.environ["INFONOISE_TEST_XLA_FLAGS"]
  ).strip()
if "PYTEST_XDIST_WORKER" in os.environ and "INFONOISE_TEST_JAX_CACHE" in os.environ:
  _CACHE = os.environ["INFONOISE_TEST_JAX_CACHE"]  # the session's, made by the first process
else:
  _CACHE = tempfile.mkdtemp(prefix="infonoise_jax_test_cache_")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["INFONOISE_TEST_JAX_CACHE"] = _CACHE
os.environ.update(
  JAX_COMPILATION_CACHE_DIR=_CACHE,
  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
)

import jax

jax.config.update("jax_num_cpu_devices", 8)


import pytest  # noqa: E402

MAX_WORKERS = 4  # each worker holds its own JAX runtime and compiles; more adds memory, not speed


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: one pytest-xdist worker per core, at most MAX_WORKERS (test files go whole to
  a worker, `--dist loadfile`, so their module fixtures are built once)."""
  del config
  return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


@pytest.fixture(autouse=True)
def _no_stored_train_steps(monkeypatch):
  """Tests train in one process, some with monkeypatched steps, and an in-process main()
  turns the persistent cache on for all later tests: a step stored by one test must not be
  loaded by another. Tests of the store point step_executables.folder at their own folder."""
  from infonoise_jax import step_executables

  monkeypatch.setattr(step_executables, "folder", lambda: None)
