"""The command line in subprocesses: SIGTERM save-and-exit, and multi-host training.

The multi-host test starts two processes that meet through `jax.distributed.initialize`
on a localhost coordinator (CPU collectives over gloo), each with one CPU device, and
checks that they train to the same state as one process with two devices and the same
global batch, and that both save and then restore the checkpoint.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from infonoise_jax.checkpointing import PREEMPTED_EXIT_CODE

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env(num_devices: int) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith("XLA_")}
  env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(num_devices), PYTHONUNBUFFERED="1")
  env["XLA_FLAGS"] = os.environ.get("INFONOISE_TEST_XLA_FLAGS", "")  # the session's (conftest)
  return env


def _cmd(workdir, *overrides):
  return [
    sys.executable,
    "-m",
    "infonoise_jax.main",
    "--config=configs/test.py",
    f"--workdir={workdir}",
    *overrides,
  ]


def _restore(workdir: pathlib.Path, step: int) -> dict:
  """A checkpoint's leaves by path, on the host, whatever the topology that saved it (the runs
  here used other device and process counts than the test process)."""
  from infonoise_jax import checkpointing

  return checkpointing.read_arrays(str(workdir), step)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_saves_a_restorable_checkpoint_and_exits(tmp_path, sig):
  """A preemption (SIGTERM) or a first Ctrl-C (SIGINT) saves the step and stops."""
  log = tmp_path / "log.txt"
  overrides = ["--config.train.num_steps=100000", "--config.train.checkpoint_every=100000"]
  with open(log, "w") as f:
    proc = subprocess.Popen(
      _cmd(tmp_path / "run", *overrides), cwd=ROOT, env=_env(1), stdout=f, stderr=f
    )
    deadline = time.time() + 120
    while "loss" not in log.read_text() and time.time() < deadline and proc.poll() is None:
      time.sleep(0.2)
    assert proc.poll() is None, log.read_text()[-3000:]
    proc.send_signal(sig)
    # A distinct non-zero code: a scheduler requeues the run instead of taking it as finished.
    assert proc.wait(timeout=120) == PREEMPTED_EXIT_CODE, log.read_text()[-3000:]
  steps = sorted(
    int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()
  )
  assert len(steps) == 1 and 0 < steps[0] < 100000
  state = _restore(tmp_path / "run", steps[0])
  assert int(state["step"]) == steps[0]
  assert "Preempted: checkpoint of step" in log.read_text()


def _start_two_processes(workdir, num_steps: int, *overrides) -> list[subprocess.Popen]:
  port = _free_port()
  procs = []
  for pid in range(2):
    args = [
      f"--config.train.num_steps={num_steps}",
      "--config.system.distributed=True",
      f"--config.system.coordinator_address=127.0.0.1:{port}",
      "--config.system.num_processes=2",
      f"--config.system.process_id={pid}",
      *overrides,
    ]
    log = open(_log_path(workdir, pid), "a")
    procs.append(
      subprocess.Popen(_cmd(workdir, *args), cwd=ROOT, env=_env(1), stdout=log, stderr=log)
    )
  return procs


def _log_path(workdir, pid: int) -> pathlib.Path:
  return pathlib.Path(workdir).parent / f"{pathlib.Path(workdir).name}_p{pid}.log"


def _wait_for(path: pathlib.Path, text: str, procs, timeout: float = 180) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if path.exists() and text in path.read_text():
      return
    time.sleep(0.2)
  raise AssertionError(
    f"{text!r} not in {path}: " + (path.read_text()[-3000:] if path.exists() else "")
  )


def test_two_processes_preempted_on_one_save_one_step_resume_and_train_like_one(tmp_path):
  """Two processes are stopped by a SIGTERM to one of them: both save the same step, the
  requeued pair restores it and trains on, and the result is one process's with two devices
  and the same global batch. (One test: each pair of processes compiles its own programs.)"""
  import re

  import jax

  from infonoise_jax import train
  from infonoise_jax.validation import load_config_file

  workdir = tmp_path / "pod"
  long = ["--config.train.checkpoint_every=100000"]
  procs = _start_two_processes(workdir, 100000, *long)
  _wait_for(_log_path(workdir, 0), "loss", procs)
  procs[1].send_signal(signal.SIGTERM)  # only process 1 is told
  codes = [p.wait(timeout=300) for p in procs]
  logs = [_log_path(workdir, pid).read_text() for pid in range(2)]
  assert codes == [PREEMPTED_EXIT_CODE] * 2, logs[0][-2000:] + logs[1][-2000:]
  saved = [int(m) for log in logs for m in re.findall(r"Preempted: checkpoint of step (\d+)", log)]
  assert len(saved) == 2 and saved[0] == saved[1], saved  # both saved the same step
  step = saved[0]
  on_disk = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert on_disk == [step]
  assert int(_restore(workdir, step)["step"]) == step
  for p in _start_two_processes(workdir, step + 4, *long):  # the requeued job resumes there
    assert p.wait(timeout=300) == 0, "a process failed; see the *_p?.log files in " + str(tmp_path)
  resumed = _log_path(workdir, 0).read_text().split("Preempted")[-1]
  assert f"at step {step}" in resumed and "Resumed" in resumed

  # One process with two devices, the same global batch, straight to the same step; it saves
  # the state packed, the two processes array by array: read_arrays reads both alike.
  single = tmp_path / "single"
  config = load_config_file(ROOT / "configs" / "test.py")
  config.train.num_steps = step + 4
  config.train.checkpoint_every = 100000
  train.train_and_evaluate(config, str(single), jax.devices()[:2])
  a, b = _restore(single, step + 4), _restore(workdir, step + 4)
  assert int(b["step"]) == step + 4
  assert sorted(a) == sorted(b)
  for path in a:
    np.testing.assert_allclose(a[path], b[path], rtol=2e-5, atol=2e-6, err_msg=path)


def test_a_second_run_on_a_busy_workdir_is_refused_in_one_line(tmp_path):
  log = tmp_path / "first.txt"
  with open(log, "w") as f:
    first = subprocess.Popen(
      _cmd(tmp_path / "run", "--config.train.num_steps=100000"),
      cwd=ROOT,
      env=_env(1),
      stdout=f,
      stderr=f,
    )
    try:
      _wait_for(log, "loss", [first])
      second = subprocess.run(
        _cmd(tmp_path / "run"), cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=300
      )
    finally:
      first.send_signal(signal.SIGTERM)
      first_code = first.wait(timeout=120)
  assert second.returncode == 1, second.stderr[-3000:]
  errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
  assert (
    len(errors) == 1 and f"pid {first.pid}" in errors[0] and "in use by another run" in errors[0]
  )
  assert "Traceback" not in second.stderr
  assert first_code == PREEMPTED_EXIT_CODE  # the first run was not disturbed


def test_user_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("not a run")
  quiet = subprocess.run(
    _cmd(afile), cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=300
  )
  assert quiet.returncode == 1
  errors = [line for line in quiet.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and f"--workdir={afile} is a file" in errors[0]
  assert "Traceback" not in quiet.stderr
  loud = subprocess.run(
    _cmd(afile),
    cwd=ROOT,
    env={**_env(1), "INFONOISE_DEBUG": "1"},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert loud.returncode != 0 and "Traceback" in loud.stderr and "WorkdirError" in loud.stderr


_DISK_FULL_AT_STEP_8 = """
import errno, sys
from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler
original = handler.JsonCheckpointHandler._save_fn
async def failing(self, x, directory):
  if x.get("step", 0) >= 8:
    raise OSError(errno.ENOSPC, "No space left on device", str(directory))
  return await original(self, x, directory)
handler.JsonCheckpointHandler._save_fn = failing
from infonoise_jax import main
sys.argv[0] = "main"
main.run()
"""


def test_disk_full_is_one_error_line_without_tracebacks(tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run(
    [
      sys.executable,
      "-c",
      _DISK_FULL_AT_STEP_8,
      "--config=configs/test.py",
      f"--workdir={workdir}",
      "--config.train.num_steps=16",
    ],
    cwd=ROOT,
    env=_env(1),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr[-3000:]
  assert f"{workdir / 'checkpoints'}" in errors[0] and "kept ([4])" in errors[0]
  assert "Traceback" not in result.stderr
  assert len(result.stderr.splitlines()) < 20  # Orbax's own error logs: one line each
  assert "Finished" not in result.stdout
