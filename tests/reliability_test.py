"""Faults a user meets (docs/reliability.md): each test reproduces one and checks the outcome.

In-process, with configs/test.py and a few steps; the command-line cases (exit codes, one-line
errors, SIGTERM on one of two processes) are in main_test.py.
"""

import json
import pathlib
import shutil
import sys

import pytest

from infonoise_jax import checkpointing, resume, train, validation
from infonoise_jax import workdir as workdir_lib
from infonoise_jax.validation import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(**overrides):
  c = load_config_file(ROOT / "configs" / "test.py", "")
  c.update_from_flattened_dict(overrides)
  return c


def _snapshot(workdir: pathlib.Path) -> dict:
  """Every file's bytes, by relative path (to check that nothing was written)."""
  return {str(p.relative_to(workdir)): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
  """A run trained to step 4 (checkpoint at 4); tests copy it before changing anything."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  train.train_and_evaluate(_config(**{"train.num_steps": 4}), str(workdir))
  return workdir


def _copy(trained: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  import shutil

  return pathlib.Path(shutil.copytree(trained, tmp_path / "run"))


# ------------------------------------------------------------------ 1. validate before writing


@pytest.mark.parametrize(
  "overrides, key",
  [
    ({"seed": 1}, "seed"),
    ({"train.batch_size": 32}, "train.batch_size"),
    ({"optim.lr": 2e-3, "train.num_steps": 8}, "optim.lr"),
    ({"model.hidden_dims": (32, 32)}, "model.hidden_dims"),
    # the run is InfoNoise: its own section, and the log-normal its warm-up base reads
    ({"schedule.infonoise.gate_pivot": 0.3}, "schedule.infonoise.gate_pivot"),
    ({"schedule.lognormal.p_mean": 0.0, "schedule.laplace.mu": 1.0}, "schedule.lognormal.p_mean"),
  ],
)
def test_refused_resume_writes_nothing(trained, tmp_path, overrides, key):
  workdir = _copy(trained, tmp_path)
  before = _snapshot(workdir)
  with pytest.raises(resume.ResumeRefusedError, match=key.replace(".", r"\.")) as info:
    train.train_and_evaluate(_config(**overrides), str(workdir))
  assert "Nothing was written" in str(info.value)
  # the flags that resume with the saved values, pasteable (a default that changed with a
  # newer checkout is refused too: 2026-12-07 probe)
  _flags_resume_as_saved(str(info.value), overrides, key)
  assert _snapshot(workdir) == before  # config.json, checkpoints and logs untouched
  assert "train.num_steps" not in str(info.value)  # an allowed change is not named as refused


def _flags_resume_as_saved(message: str, overrides: dict, key: str) -> None:
  """The message's --config.KEY=VALUE words, split as a shell splits them (a tuple's '(' was a
  bash syntax error unquoted) and applied over the refused command's config, give back the
  saved values of the refused keys, `key` among them."""
  import shlex

  lexer = shlex.shlex(
    message.partition(" add ")[2].partition(" (a key you")[0], posix=True, punctuation_chars=True
  )  # '(' and ')' split words, as in bash
  lexer.whitespace_split = True
  words = list(lexer)
  assert all(w.startswith("--config.") for w in words) and f"--config.{key}" in " ".join(words)
  config = _config(**overrides)
  validation.apply_overrides(config, [w.removeprefix("--config.") for w in words], "--config")
  now, saved = (validation.flat_items(c.to_dict()) for c in (config, _config()))
  for k in (w.removeprefix("--config.").partition("=")[0] for w in words):
    assert now[k] == saved[k], (k, words)


def test_allowed_resume_changes_are_recorded_in_the_history(trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  with caplog.at_level("INFO"):
    train.train_and_evaluate(_config(**{"train.num_steps": 6, "train.log_every": 3}), str(workdir))
  # ... and said on the console, as the history records them
  assert "Resuming at step 4 with changed settings (train.log_every: 2 -> 3" in caplog.text
  assert "train.num_steps: 4 -> 6" in caplog.text
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["train"]["num_steps"] == 6 and saved["train"]["log_every"] == 3
  lines = (workdir / resume.HISTORY_FILE).read_text().splitlines()
  assert len(lines) == 1
  entry = json.loads(lines[0])
  assert entry["resumed_at_step"] == 4
  assert entry["changes"] == {
    "train.log_every": {"from": 2, "to": 3},
    "train.num_steps": {"from": 4, "to": 6},
  }
  assert checkpointing.saved_steps(str(workdir))[-1] == 6
  # The same command again changes nothing, so the history does not grow.
  train.train_and_evaluate(_config(**{"train.num_steps": 6, "train.log_every": 3}), str(workdir))
  assert len((workdir / resume.HISTORY_FILE).read_text().splitlines()) == 1


def test_a_resume_accepts_changes_to_schedule_sections_the_run_does_not_read(
  trained, tmp_path, caplog
):
  """An InfoNoise run never reads schedule.laplace or schedule.cosine: a change there does not
  touch the saved state, so the resume goes on (it was refused, the message claiming the key
  fixes what the saved state means), says so, and records the change as any other."""
  workdir = _copy(trained, tmp_path)
  changed = {"train.num_steps": 6, "schedule.laplace.mu": 1.0, "schedule.cosine.shift": 0.5}
  with caplog.at_level("INFO"):
    train.train_and_evaluate(_config(**changed), str(workdir))
  assert checkpointing.saved_steps(str(workdir))[-1] == 6
  assert (
    "schedule.cosine.shift, schedule.laplace.mu: the infonoise schedule does not read "
    "schedule.cosine, schedule.laplace (it reads schedule.infonoise, schedule.lognormal), so "
    "these changes have no effect on this run's training"
  ) in caplog.text
  entry = json.loads((workdir / resume.HISTORY_FILE).read_text().splitlines()[-1])
  assert entry["changes"]["schedule.laplace.mu"] == {"from": 0.0, "to": 1.0}
  assert json.loads((workdir / "config.json").read_text())["schedule"]["laplace"]["mu"] == 1.0


@pytest.mark.parametrize(
  "name, accepted, refused",
  [
    ("infonoise", {"schedule.adaptive.floor": 0.1}, {"schedule.lognormal.p_std": 1.0}),
    ("lognormal", {"schedule.infonoise.num_bins": 8}, {"schedule.lognormal.p_std": 1.0}),
    ("logitnormal", {"schedule.lognormal.p_std": 1.0}, {"schedule.logitnormal.std": 2.0}),
    ("loguniform", {"schedule.lognormal.p_std": 1.0}, {"edm.sigma_max": 40.0}),
    ("vdmpp", {"schedule.infonoise.num_bins": 8}, {"schedule.lognormal.p_mean": 0.0}),
    ("cdcd", {"schedule.laplace.b": 1.0}, {"schedule.adaptive.num_bins": 8}),
    ("edm2", {"schedule.infonoise.gate": "none"}, {"schedule.adaptive.edm2_lr": 1e-2}),
    ("edm2", {"schedule.cosine.shift": 1.0}, {"schedule.lognormal.p_mean": 0.0}),
  ],
)
def test_a_resume_compares_the_schedule_sections_its_schedule_reads(name, accepted, refused):
  """Each schedule's own section and the sections it builds on (the adaptive peers' and
  InfoNoise's base log-normal) are compared; other schedules' sections are not."""
  config = _config(**{"schedule.name": name})
  diff = {k: ("saved", v) for k, v in {**accepted, **refused}.items()}
  assert resume.refused(config, diff) == {k: ("saved", v) for k, v in refused.items()}
  assert resume.unread_schedule_keys(config, diff) == {k: ("saved", v) for k, v in accepted.items()}
  # a changed schedule.name is refused, and both schedules' sections count
  config = _config(**{"schedule.name": "laplace"})
  diff = {"schedule.name": ("infonoise", "laplace"), "schedule.lognormal.p_mean": (-1.2, 0.0)}
  assert resume.refused(config, diff) == diff


def test_config_sections_name_exactly_the_schedule_sections_a_schedule_reads():
  """`config_sections` (what a resume compares) is what `from_config` reads: each schedule
  builds with every other schedule section removed, and fails without any section it names."""
  from infonoise_jax import schedules

  for name in schedules.SCHEDULES:
    config = _config(**{"schedule.name": name})
    declared = schedules.config_sections(name)
    assert declared is not None, name
    sections = [k for k, v in config.schedule.items() if hasattr(v, "items")]
    assert set(declared) <= set(sections), name
    without_others = config.copy_and_resolve_references()
    for section in sections:
      if section not in declared:
        del without_others.schedule[section]
    schedules.make_schedule(without_others)  # reads nothing it does not name
    for section in declared:
      without = config.copy_and_resolve_references()
      del without.schedule[section]
      with pytest.raises((AttributeError, KeyError)):  # the class itself reads it
        schedules.SCHEDULES[name].from_config(without)
      with pytest.raises(ValueError, match=f"reads schedule.{section},? "):  # said so by name
        schedules.make_schedule(without)


def test_resumable_keys_exist_in_the_default_config():
  from infonoise_jax.validation import DEFAULT_CONFIG_PATH, flat_keys

  keys = flat_keys(load_config_file(DEFAULT_CONFIG_PATH))
  for entry in resume.RESUMABLE:
    assert any(k == entry or (entry.endswith(".") and k.startswith(entry)) for k in keys), entry


# ------------------------------------------------------------------ 3. never save a diverged state


def test_diverged_state_is_never_saved_and_every_kept_checkpoint_resumes(tmp_path):
  import jax
  import numpy as np

  from infonoise_jax import metrics

  # With lr 1e9 the state after step 2 is finite but diverged: its next step's gradient is NaN.
  # The old guard saved it as "last good" (checking only the loss computed before the update).
  config = _config(
    **{"optim.lr": 1e9, "train.checkpoint_every": 1, "train.log_every": 1, "train.num_steps": 10}
  )
  workdir = tmp_path / "div"
  with pytest.raises(metrics.NonFiniteError, match=r"between steps \d+ and \d+") as info:
    train.train_and_evaluate(config, str(workdir))
  saved = checkpointing.saved_steps(str(workdir))
  assert saved, "the first steps are healthy and must be saved"
  assert f"last good checkpoint is kept at {workdir / 'checkpoints'}/{saved[-1]}" in str(info.value)
  # Independently of the guard: every kept checkpoint resumes to a finite next step.
  run = train.Run(config, str(workdir))
  ckpt = checkpointing.Checkpointer(str(workdir), 3)
  for step in saved:
    state, _ = ckpt.restore(run.abstract_state, step)
    assert int(state.step) == step
    _, m = run.train_step(state, run.global_batch(run.pipeline.batch(step)))
    m = jax.device_get({"loss": m["loss"], "grad_norm": m["grad_norm"]})
    assert all(np.isfinite(v) for v in m.values()), (step, m)
  ckpt.close()


def test_nan_loss_aborts_with_step_range_before_any_save(tmp_path):
  from infonoise_jax import metrics

  config = _config(**{"optim.lr": 1e30, "optim.warmup_steps": 0, "train.num_steps": 40})
  with pytest.raises(metrics.NonFiniteError, match=r"between steps \d+ and \d+") as info:
    train.train_and_evaluate(config, str(tmp_path / "nan"))
  assert "no checkpoint was saved before it" in str(info.value)
  assert checkpointing.saved_steps(str(tmp_path / "nan")) == []
  # What the message says to do works: the fixed setting with --fresh trains.
  assert "rerun with --fresh" in str(info.value)
  fixed = _config(**{"train.num_steps": 2})
  with pytest.raises(ValueError, match="--fresh"):  # without it: the attempt's logs are there
    train.train_and_evaluate(fixed, str(tmp_path / "nan"))
  train.train_and_evaluate(fixed, str(tmp_path / "nan"), fresh=True)
  assert checkpointing.saved_steps(str(tmp_path / "nan")) == [2]


# ------------------------------------------------------------------ 2. a failed save fails the run


def _fail_meta_writes(monkeypatch, from_step: int, errno_code: int) -> None:
  """Makes the background write of the checkpoint's meta item fail from `from_step` on, as a
  full disk (ENOSPC) or a read-only folder (EROFS) would."""
  import errno
  import os

  from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

  original = handler.JsonCheckpointHandler._save_fn

  async def failing(self, x, directory):
    if x.get("step", 0) >= from_step:
      raise OSError(errno_code, os.strerror(errno_code), str(directory / "metadata"))
    return await original(self, x, directory)

  assert errno.ENOSPC and errno.EROFS
  monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", failing)


@pytest.mark.parametrize(
  "errno_name, num_steps, cause",
  [("ENOSPC", 16, "No space left on device"), ("EROFS", 8, "Read-only file system")],
)
def test_failed_save_stops_the_run_keeping_earlier_checkpoints(
  trained, tmp_path, monkeypatch, capsys, errno_name, num_steps, cause
):
  import errno

  workdir = _copy(trained, tmp_path)  # checkpoint 4 on disk
  _fail_meta_writes(monkeypatch, 8, getattr(errno, errno_name))
  # keep_checkpoints=1: a save that were taken as done would delete step 4.
  config = _config(**{"train.num_steps": num_steps, "train.keep_checkpoints": 1})
  with pytest.raises(checkpointing.SaveFailedError) as info:
    train.train_and_evaluate(config, str(workdir))
  message = str(info.value)
  assert "\n" not in message
  assert f"Saving checkpoint step 8 in {workdir / 'checkpoints'} failed: {cause}" in message
  assert "Earlier checkpoints are kept ([4])" in message
  assert checkpointing.saved_steps(str(workdir)) == [4]  # stopped before any later save
  assert "Finished" not in capsys.readouterr().out
  assert (workdir / "samples.npz").read_bytes() == (trained / "samples.npz").read_bytes()
  assert not (workdir / "run.lock").exists()  # released on the way out
  # The kept checkpoint still resumes: the run completes once the folder is fixed.
  monkeypatch.undo()
  state = train.train_and_evaluate(config, str(workdir))
  assert int(state.step) == num_steps


def test_a_full_disk_in_an_array_write_is_named_in_the_error(trained, tmp_path, monkeypatch):
  """A full disk under Orbax's array writes reaches us as tensorstore's ValueError, ~600
  characters ending "No space left on device [os_error_code='28']": the message cut it at 300
  characters, before the cause."""
  from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

  path = f"{tmp_path}/run/checkpoints/8.orbax-checkpoint-tmp/packed.orbax-checkpoint-tmp/ocdbt"
  text = (
    f'RESOURCE_EXHAUSTED: Error writing "float32/0" in OCDBT database at local file "{path}/": '
    f'Failed writing: "{path}/d/ece87248f97dcc4c64acbe7915cff923": Failed to write 24727552 '
    "bytes to file 7: No space left on device [os_error_code='28']"
  )

  async def failing(self, x, directory):
    raise ValueError(text)

  workdir = _copy(trained, tmp_path)
  monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", failing)
  with pytest.raises(checkpointing.SaveFailedError) as info:
    train.train_and_evaluate(_config(**{"train.num_steps": 8}), str(workdir))
  message = str(info.value)
  assert "failed: No space left on device [errno 28] (ValueError: RESOURCE_EXHAUSTED" in message
  assert "os_error_code='28']" in message and len(message) < 600


@pytest.mark.skipif(
  not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
  reason="root writes into read-only folders; the EROFS case above covers it",
)
def test_read_only_checkpoint_folder_stops_the_run(trained, tmp_path, capsys):
  workdir = _copy(trained, tmp_path)
  (workdir / "checkpoints").chmod(0o555)
  try:
    with pytest.raises(checkpointing.SaveFailedError, match="checkpoints"):
      train.train_and_evaluate(_config(**{"train.num_steps": 8}), str(workdir))
  finally:
    (workdir / "checkpoints").chmod(0o755)
  assert checkpointing.saved_steps(str(workdir)) == [4]
  assert "Finished" not in capsys.readouterr().out


# ------------------------------------------------------------------ 4. one run per workdir


def _write_lock(workdir: pathlib.Path, host: str, pid: int) -> None:
  (workdir / "run.lock").write_text(json.dumps({"host": host, "pid": pid, "started": "then"}))


def test_a_live_lock_refuses_a_second_run_naming_the_holder(trained, tmp_path):
  import os
  import socket

  workdir = _copy(trained, tmp_path)
  _write_lock(workdir, socket.gethostname(), os.getpid())  # this very process: alive
  before = _snapshot(workdir)
  with pytest.raises(workdir_lib.WorkdirLockedError) as info:
    train.train_and_evaluate(_config(**{"train.num_steps": 8}), str(workdir))
  assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(info.value)
  assert _snapshot(workdir) == before


def test_a_lock_being_written_is_read_once_written(tmp_path):
  """Two runs started in the same instant: the second found the first's lock created but not
  yet written and called it unreadable, suggesting its removal. It now reads it again after a
  moment and names the holder, as for any live lock."""
  import os
  import socket
  import threading

  (tmp_path / "run.lock").write_text("")  # created, not yet written
  writer = threading.Timer(0.05, _write_lock, (tmp_path, socket.gethostname(), os.getpid()))
  writer.start()
  with pytest.raises(workdir_lib.WorkdirLockedError) as info:
    with workdir_lib.Lock(str(tmp_path)):
      pass
  writer.join()
  assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(info.value)
  assert "unreadable" not in str(info.value)


def test_a_lock_from_another_host_is_never_taken_over(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  _write_lock(workdir, "some-other-host", 1)
  with pytest.raises(workdir_lib.WorkdirLockedError, match=r"some-other-host.*remove .*run\.lock"):
    train.train_and_evaluate(_config(**{"train.num_steps": 8}), str(workdir))


def test_a_stale_lock_of_a_dead_process_is_taken_over(trained, tmp_path):
  import socket
  import subprocess

  workdir = _copy(trained, tmp_path)
  dead = subprocess.Popen(["true"])
  dead.wait()
  _write_lock(workdir, socket.gethostname(), dead.pid)
  state = train.train_and_evaluate(_config(**{"train.num_steps": 6}), str(workdir))
  assert int(state.step) == 6
  assert not (workdir / "run.lock").exists()


def test_a_read_only_workdir_is_named_as_such(tmp_path, monkeypatch):
  """A resume on a read-only copy of a run said only "[Errno 30] Read-only file system:
  '.../run.lock'"; now the workdir, the cause and the ways on."""
  import errno
  import os

  real_open = os.open

  def read_only(path, *args, **kwargs):
    if str(path).endswith("run.lock"):
      raise OSError(errno.EROFS, "Read-only file system", str(path))
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(workdir_lib.os, "open", read_only)
  with pytest.raises(workdir_lib.WorkdirError, match=r"cannot be written \(Read-only file sys"):
    workdir_lib.Lock(str(tmp_path)).acquire()
  assert "copy the run to a writable --workdir" in str(
    pytest.raises(workdir_lib.WorkdirError, workdir_lib.Lock(str(tmp_path)).acquire).value
  )


def test_a_lock_whose_heartbeat_stopped_is_taken_over_from_any_host(tmp_path):
  """A run killed outright on another host (a lost VM, SIGKILL) cannot be checked by pid: its
  lock is stale once its heartbeat is older than STALE_AFTER_S, and a live one, renewed by
  its holder's thread, is refused with the heartbeat's age and when it would be taken over."""
  import time

  lock_file = tmp_path / "run.lock"
  beat = time.time() - workdir_lib.STALE_AFTER_S - 5
  lock_file.write_text(json.dumps({"host": "gone-vm", "pid": 1, "started": "then", "beat": beat}))
  with workdir_lib.Lock(str(tmp_path)):
    assert json.loads(lock_file.read_text())["host"] != "gone-vm"
  assert not lock_file.exists()

  holder = workdir_lib.Lock(str(tmp_path), heartbeat_s=0.05)
  holder.acquire()
  try:
    first = json.loads(lock_file.read_text())["beat"]
    time.sleep(0.4)
    assert json.loads(lock_file.read_text())["beat"] > first  # renewed while held
    with pytest.raises(workdir_lib.WorkdirLockedError, match=r"heartbeat \d+ s ago.*600 s old"):
      workdir_lib.Lock(str(tmp_path)).acquire()
  finally:
    holder.release()
  assert not lock_file.exists()


def test_a_save_that_lost_another_process_is_a_requeue_not_a_bad_folder(tmp_path, monkeypatch):
  """Two processes, one killed: the survivor's save failed in its collective ("Gloo AllGather
  failed ... Connection reset by peer") and was reported as a folder problem, exit code 1, so
  a scheduler that requeues on 75 let the run die. With several processes such a cause is a
  PeerLostError (exit 75, the folder called fine); one process keeps the folder message."""
  from infonoise_jax import checkpointing, cli

  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=1)
  lost = RuntimeError("UNKNOWN: Gloo AllGather failed: Connection reset by peer")
  assert type(ckpt._save_failed(8, lost)) is checkpointing.SaveFailedError  # one process
  monkeypatch.setattr(checkpointing.jax, "process_count", lambda: 2)
  error = ckpt._save_failed(8, lost)
  assert isinstance(error, checkpointing.PeerLostError)
  assert "another process of this run is gone" in str(error) and "folder is fine" in str(error)
  assert type(ckpt._save_failed(8, OSError(28, "No space left"))) is checkpointing.SaveFailedError
  ckpt.close()

  def fail():
    raise error

  exits = []
  monkeypatch.setattr(cli.os, "_exit", lambda code: exits.append(code) or sys.exit(code))
  monkeypatch.setattr(cli.logging_lib, "shutdown", lambda: None)  # this process goes on
  with pytest.raises(SystemExit):
    cli.run_command(fail)
  assert exits == [checkpointing.PREEMPTED_EXIT_CODE]


def test_a_declined_save_is_an_error(trained, tmp_path, monkeypatch):
  import orbax.checkpoint as ocp

  workdir = _copy(trained, tmp_path)
  monkeypatch.setattr(ocp.CheckpointManager, "save", lambda *a, **k: False)
  with pytest.raises(checkpointing.SaveFailedError, match="declined to save step 8"):
    train.train_and_evaluate(_config(**{"train.num_steps": 8}), str(workdir))


# ------------------------------------------------------------------ 5. corrupt checkpoints


@pytest.fixture(scope="module")
def trained8(tmp_path_factory) -> pathlib.Path:
  """A run trained to step 8 (checkpoints 4 and 8)."""
  workdir = tmp_path_factory.mktemp("trained8") / "run"
  train.train_and_evaluate(_config(), str(workdir))
  return workdir


def _arrays(step_dir: pathlib.Path) -> pathlib.Path:
  """The Orbax item holding the state's arrays: "packed" (one process), "state" (several)."""
  return step_dir / ("packed" if (step_dir / "packed").exists() else "state")


def _truncate_largest_array_file(step_dir: pathlib.Path) -> None:
  largest = max(
    (p for p in _arrays(step_dir).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
  )
  with open(largest, "r+b") as f:
    f.truncate(1000)


def _corrupt(step_dir: pathlib.Path, kind: str) -> None:
  import shutil

  if kind == "truncated array file":
    _truncate_largest_array_file(step_dir)
  elif kind == "missing _METADATA":
    (_arrays(step_dir) / "_METADATA").unlink()
  elif kind == "missing meta item":
    shutil.rmtree(step_dir / "meta")


def _restore_plain(workdir: pathlib.Path, step: int):
  import jax

  run = train.Run(_config(), str(workdir))
  ckpt = checkpointing.Checkpointer(str(workdir), 3)
  state, _ = ckpt.restore(run.abstract_state, step)
  ckpt.close()
  return jax.device_get(state)


@pytest.mark.parametrize("kind", ["truncated array file", "missing _METADATA", "missing meta item"])
def test_corrupt_latest_step_is_moved_aside_and_the_previous_one_resumes(
  trained8, tmp_path, caplog, kind
):
  import numpy as np

  workdir = _copy(trained8, tmp_path)
  files_before = sorted(p.name for p in (workdir / "checkpoints" / "8").rglob("*"))
  _corrupt(workdir / "checkpoints" / "8", kind)
  state = train.train_and_evaluate(_config(), str(workdir))  # resumes from 4, retrains 5..8
  aside = workdir / "checkpoints_corrupt" / "8"
  assert aside.is_dir()  # moved, never deleted
  assert len(list(aside.rglob("*"))) >= len(files_before) - 3
  assert any("checkpoints/8 is corrupt" in r.getMessage() for r in caplog.records)
  assert checkpointing.saved_steps(str(workdir)) == [4, 8]
  # Resume is bit-identical, so the retrained step 8 equals the one that was lost.
  import jax

  original = _restore_plain(trained8, 8)
  for a, b in zip(jax.tree.leaves(original), jax.tree.leaves(jax.device_get(state)), strict=True):
    np.testing.assert_array_equal(a, b)


def test_sample_on_a_corrupt_latest_checkpoint_names_the_steps_it_can_use(trained8, tmp_path):
  """The trainer goes on from the newest good checkpoint by itself; `sample` / `evaluate` /
  `diagnose` restore one step, so their error lists the other saved steps and the --step to
  give (it named only the corrupt one)."""
  from infonoise_jax import restore

  workdir = _copy(trained8, tmp_path)
  _truncate_largest_array_file(workdir / "checkpoints" / "8")
  with pytest.raises(checkpointing.CorruptCheckpointError, match="8 is corrupt or incomplete") as e:
    restore.restore_run(str(workdir))
  assert str(e.value).endswith("the other saved steps are [4]: --step=4 uses the newest of them")
  assert restore.restore_run(str(workdir), 4).step == 4


def test_every_checkpoint_corrupt_is_one_clear_error(trained8, tmp_path):
  workdir = _copy(trained8, tmp_path)
  for step in (4, 8):
    _truncate_largest_array_file(workdir / "checkpoints" / str(step))
  with pytest.raises(checkpointing.CorruptCheckpointError, match=r"steps \[4, 8\] are all corrupt"):
    train.train_and_evaluate(_config(), str(workdir))
  assert sorted(p.name for p in (workdir / "checkpoints_corrupt").iterdir()) == ["4", "8"]
  # The same command again (a requeue loop) does not take the run for an attempt that stopped
  # before its first checkpoint and start it over at step 0; --fresh does, on purpose.
  before = _snapshot(workdir)
  with pytest.raises(workdir_lib.WorkdirError, match=r"checkpoints_corrupt holds steps \['4'"):
    train.train_and_evaluate(_config(), str(workdir))
  assert _snapshot(workdir) == before
  train.train_and_evaluate(_config(), str(workdir), fresh=True)
  assert checkpointing.saved_steps(str(workdir)) == [4, 8]


def test_a_finished_run_whose_checkpoints_were_removed_is_not_started_over(trained8, tmp_path):
  workdir = _copy(trained8, tmp_path)
  shutil.rmtree(workdir / "checkpoints")
  with pytest.raises(workdir_lib.WorkdirError, match="samples.npz shows it trained to the end"):
    train.train_and_evaluate(_config(), str(workdir))


def test_a_changed_config_is_not_taken_for_corruption(trained8, tmp_path, monkeypatch):
  workdir = _copy(trained8, tmp_path)
  (workdir / "config.json").unlink()
  # a run from before config.json and before checkpoints kept a copy: only the state can tell
  real = train.saved_meta
  monkeypatch.setattr(
    train, "saved_meta", lambda *a: {k: v for k, v in real(*a).items() if k != "config"}
  )
  with pytest.raises(ValueError, match="does not match the state this config builds"):
    train.train_and_evaluate(_config(**{"model.hidden_dims": (32, 32)}), str(workdir))
  assert not (workdir / "checkpoints_corrupt").exists()
  assert checkpointing.saved_steps(str(workdir)) == [4, 8]


def test_a_lost_config_json_is_checked_against_the_checkpoints_copy(trained8, tmp_path):
  """A workdir that lost config.json still refuses a changed batch, learning rate or seed
  (shapes alone would not show them) by the copy each checkpoint keeps, names the key, and
  writes config.json again when the resume is accepted."""
  workdir = _copy(trained8, tmp_path)
  (workdir / "config.json").unlink()
  before = _snapshot(workdir)
  for key, value in [("train.batch_size", 32), ("optim.lr", 0.01), ("seed", 7)]:
    with pytest.raises(resume.ResumeRefusedError, match=f"changed {key}"):
      train.train_and_evaluate(_config(**{key: value}), str(workdir))
    assert _snapshot(workdir) == before
  train.train_and_evaluate(_config(**{"train.num_steps": 10}), str(workdir))
  assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 10
  assert checkpointing.saved_steps(str(workdir))[-1] == 10


# ------------------------------------------------------------------ 6. impossible workdir states


def _moved_logs_are_apart(workdir: pathlib.Path) -> None:
  moved = list(workdir.glob("tensorboard.before-*"))
  assert len(moved) == 1 and list(moved[0].glob("events.out.tfevents.*"))
  old_events = {p.name for p in moved[0].glob("events.out.tfevents.*")}
  new_events = {p.name for p in (workdir / "tensorboard").glob("events.out.tfevents.*")}
  assert new_events and not (old_events & new_events)


@pytest.mark.parametrize("overrides", [{"seed": 1}, {"seed": 1, "train.num_steps": 2}])
def test_another_runs_logs_without_checkpoints_are_refused_unless_fresh(
  trained, tmp_path, overrides
):
  import shutil

  workdir = _copy(trained, tmp_path)
  shutil.rmtree(workdir / "checkpoints")
  before = _snapshot(workdir)
  with pytest.raises(
    workdir_lib.WorkdirError, match="TensorBoard logs .* but no checkpoint.*--fresh"
  ):
    train.train_and_evaluate(_config(**overrides), str(workdir))  # not config.json's run
  assert _snapshot(workdir) == before
  train.train_and_evaluate(_config(**overrides), str(workdir), fresh=True)
  _moved_logs_are_apart(workdir)


def test_the_same_run_stopped_before_its_first_checkpoint_starts_over(trained, tmp_path, caplog):
  """A requeued command finds its own earlier attempt's logs and config.json but no
  checkpoint (killed before the first save): it starts over, the logs moved aside. A change
  a resume may make (more steps) still counts as the same run."""
  import shutil

  workdir = _copy(trained, tmp_path)
  shutil.rmtree(workdir / "checkpoints")
  (workdir / "samples.npz").unlink()  # killed before its first save: no final outputs either
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(_config(**{"train.num_steps": 6}), str(workdir))
  assert "an earlier attempt of this run (same config.json) stopped before" in caplog.text
  assert checkpointing.saved_steps(str(workdir))[-1] == 6  # trained from step 0 (config: every 4)
  _moved_logs_are_apart(workdir)


@pytest.mark.parametrize("left", ["no samples.npz", "a cut-short samples.npz"])
def test_a_run_stopped_while_writing_its_final_outputs_writes_them_on_the_rerun(
  trained, tmp_path, caplog, left
):
  """Killed after the final checkpoint but before samples.npz (written last) or while writing
  it (a cut-short file is not a zip file; the rerun failed with BadZipFile): the rerun writes
  the final outputs instead of saying there is nothing to do; once they are there, a rerun
  writes nothing."""
  import numpy as np

  workdir = _copy(trained, tmp_path)
  want = np.load(workdir / "samples.npz")["samples"]
  if left == "a cut-short samples.npz":  # and a run without earlier plots (sample_every=0)
    for p in (workdir / "images").glob("loss_by_log_sigma*"):
      p.unlink()
  if left == "no samples.npz":
    (workdir / "samples.npz").unlink()
  else:
    (workdir / "samples.npz").write_bytes((workdir / "samples.npz").read_bytes()[:200])
  (workdir / "samples.png").unlink()
  had = any(p.name.startswith("loss_by_log_sigma") for p in (workdir / "images").glob("*"))
  assert had == (left == "no samples.npz")  # both messages are checked
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(_config(**{"train.num_steps": 4}), str(workdir))
  assert "the final samples are not (the run was stopped while writing them)" in caplog.text
  assert "schedule-history plots are made from the stopped process's" in caplog.text
  says = "their last versions are those of" if had else "this run wrote no earlier ones"
  assert says in caplog.text
  with np.load(workdir / "samples.npz") as z:
    assert int(z["step"]) == 4
    np.testing.assert_array_equal(z["samples"], want)  # the same seed: the same samples
  assert (workdir / "samples.png").exists()
  before = _snapshot(workdir)
  train.train_and_evaluate(_config(**{"train.num_steps": 4}), str(workdir))
  assert _snapshot(workdir) == before


def test_a_sigterm_that_breaks_the_final_samples_stops_as_a_preemption(tmp_path, monkeypatch):
  """SIGTERM while the final samples are drawn reaches the compiler's subprocesses as well
  (a job's time limit signals the whole process group; seen on an H100: "ptxas exited with
  non-zero error code 15"), so drawing them fails: the run stops as a preemption (exit 75, the
  final checkpoint saved), not with the compiler's error, and the requeued command writes the
  final outputs. The same failure without a SIGTERM is still an error."""
  import os
  import signal

  from infonoise_jax import diagnostics

  real = diagnostics.write_final

  def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    raise RuntimeError("INTERNAL: ptxas exited with non-zero error code 15")

  workdir = tmp_path / "run"
  monkeypatch.setattr(diagnostics, "write_final", killed)
  with pytest.raises(checkpointing.StoppedOutsideLoop):
    train.train_and_evaluate(_config(**{"train.num_steps": 4}), str(workdir))
  assert checkpointing.saved_steps(str(workdir))[-1] == 4
  assert not (workdir / "samples.npz").exists()
  monkeypatch.setattr(diagnostics, "write_final", real)
  train.train_and_evaluate(_config(**{"train.num_steps": 4}), str(workdir))
  assert (workdir / "samples.npz").exists()

  def broken(*args, **kwargs):
    raise RuntimeError("a sampler that fails on its own")

  monkeypatch.setattr(diagnostics, "write_final", broken)
  with pytest.raises(RuntimeError, match="fails on its own"):
    train.train_and_evaluate(_config(**{"train.num_steps": 4}), str(tmp_path / "other"))


@pytest.mark.parametrize("signame, by", [("SIGTERM", "SIGTERM"), ("SIGINT", "Ctrl-C")])
def test_a_signal_while_the_final_samples_are_drawn_stops_at_once(
  tmp_path, monkeypatch, signame, by
):
  """A SIGTERM or Ctrl-C after the final checkpoint, while the final samples are drawn, stops
  there as a preemption (exit 75): the checkpoint is saved and the rerun writes the outputs.
  The loop's flag took it and nothing read it: the samples were drawn to the end (a Ctrl-C was
  told it would stop "after the current step") and the run finished as if never signalled."""
  import os
  import signal

  from infonoise_jax import diagnostics

  real = diagnostics.write_final
  drawn = []

  def signalled(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, signame))
    drawn.append(True)  # reached only when the signal did not stop the run
    return real(*args, **kwargs)

  workdir = tmp_path / "run"
  monkeypatch.setattr(diagnostics, "write_final", signalled)
  with pytest.raises(checkpointing.StoppedOutsideLoop, match=f"Stopped by {by}"):
    train.train_and_evaluate(_config(**{"train.num_steps": 4}), str(workdir))
  assert not drawn and not (workdir / "samples.npz").exists()
  assert checkpointing.saved_steps(str(workdir))[-1] == 4
  assert not (workdir / "run.lock").exists()
  monkeypatch.setattr(diagnostics, "write_final", real)
  train.train_and_evaluate(_config(**{"train.num_steps": 4}), str(workdir))
  assert (workdir / "samples.npz").exists()


@pytest.mark.parametrize("signame, by", [("SIGTERM", "SIGTERM"), ("SIGINT", "Ctrl-C")])
def test_a_signal_during_a_sample_grid_between_steps_stops_it_and_saves(
  tmp_path, monkeypatch, caplog, signame, by
):
  """A SIGTERM or Ctrl-C while a sample grid is drawn between steps stops the grid at once and
  saves the step's checkpoint (exit 75): the flag was read only after the grid, so a long grid
  or periodic evaluation outlasted a preemption's grace period before the save. A grid due at
  a step after the signal is skipped; the rerun draws the next grid as usual."""
  import os
  import signal

  from infonoise_jax import diagnostics

  real, grids = diagnostics.write_images, []

  def signalled(run, state, writer, workdir, step, log):
    if step == 4:
      os.kill(os.getpid(), getattr(signal, signame))
    grids.append(step)  # reached only where no signal stopped the grid
    return real(run, state, writer, workdir, step, log)

  monkeypatch.setattr(diagnostics, "write_images", signalled)
  overrides = {"train.num_steps": 8, "train.sample_every": 2, "train.checkpoint_every": 100}
  workdir = tmp_path / "run"
  with caplog.at_level("WARNING"), pytest.raises(checkpointing.Preempted, match="step 4 saved"):
    train.train_and_evaluate(_config(**overrides), str(workdir))
  assert grids == [2]
  assert checkpointing.saved_steps(str(workdir)) == [4]
  assert any(f"sample grid of step 4 stopped by {by}" in r.getMessage() for r in caplog.records)
  monkeypatch.setattr(diagnostics, "write_images", real)
  state = train.train_and_evaluate(_config(**overrides), str(workdir))
  assert int(state.step) == 8 and (workdir / "samples.npz").exists()


def test_an_error_in_a_sample_grid_saves_the_step_first(tmp_path, monkeypatch, caplog):
  """A sample grid or periodic FID that raises between steps (out of memory in Inception, a bad
  file) saves the step's checkpoint, then raises its error: it lost every step since the last
  checkpoint (with fid_every = checkpoint_every, all of a run's first interval). The rerun goes
  on from that step."""
  from infonoise_jax import diagnostics

  real = diagnostics.write_images

  def failing(run, state, writer, workdir, step, log):
    raise RuntimeError("RESOURCE_EXHAUSTED: out of memory (simulated)")

  monkeypatch.setattr(diagnostics, "write_images", failing)
  overrides = {"train.num_steps": 8, "train.sample_every": 6, "train.checkpoint_every": 4}
  workdir = tmp_path / "run"
  with caplog.at_level("ERROR"), pytest.raises(RuntimeError, match="out of memory"):
    train.train_and_evaluate(_config(**overrides), str(workdir))
  assert checkpointing.saved_steps(str(workdir)) == [4, 6]
  assert any(
    "the sample grid of step 6 failed (RuntimeError: RESOURCE_EXHAUSTED" in r.getMessage()
    and "the checkpoint of step 6 is saved" in r.getMessage()
    for r in caplog.records
  )
  monkeypatch.setattr(diagnostics, "write_images", real)
  state = train.train_and_evaluate(_config(**overrides), str(workdir))
  assert int(state.step) == 8 and (workdir / "samples.npz").exists()


def test_every_window_up_to_a_saved_step_is_on_disk_before_the_step(tmp_path, monkeypatch):
  """A run killed (SIGKILL, OOM) once a checkpoint is on disk resumes after its step and never
  logs the windows up to it again: they must reach the event file before the save starts. The
  file was flushed every 30 s, and tensorboardX's flush left its queue's last events unwritten:
  a kill -9 left a hole at the checkpoint's step (default config, checkpoint 300: 250, 350)."""
  from tensorboard.backend.event_processing import event_file_loader

  def logged_loss_steps(workdir):
    steps = set()
    for path in (workdir / "tensorboard").glob("events.out.tfevents*"):
      for event in event_file_loader.EventFileLoader(str(path)).Load():
        steps |= {event.step for v in event.summary.value if v.tag == "loss"}
    return steps

  workdir = tmp_path / "run"
  on_disk = {}
  real = train._save

  def save(run, ckpt, step, state, history, background=False):
    on_disk[step] = logged_loss_steps(workdir)
    return real(run, ckpt, step, state, history, background=background)

  monkeypatch.setattr(train, "_save", save)
  config = _config(**{"train.num_steps": 24, "train.log_every": 4, "train.checkpoint_every": 8})
  train.train_and_evaluate(config, str(workdir))
  assert sorted(on_disk) == [8, 16, 24]
  for step, logged in on_disk.items():
    assert set(range(4, step + 1, 4)) <= logged, (step, sorted(logged))


def test_a_sample_grid_plots_the_window_that_ends_at_its_step(tmp_path, monkeypatch):
  """The loss-by-noise plot and schedule history of a grid at step S (titled '@ step S') show
  the window ending at S, not the one before it (windows are fetched one window late: the
  grid at 2,000 of the default config plotted steps 1,801-1,900)."""
  from infonoise_jax import diagnostics

  real, latest = diagnostics.write_images, {}

  def write_images(run, state, writer, workdir, step, log=None):
    latest[step] = log.history[-1][0] if log is not None and log.history else None
    return real(run, state, writer, workdir, step, log)

  monkeypatch.setattr(diagnostics, "write_images", write_images)
  config = _config(**{"train.num_steps": 12, "train.log_every": 2, "train.sample_every": 4})
  train.train_and_evaluate(config, str(tmp_path / "run"))
  assert latest == {4: 4, 8: 8, 12: 12}


def test_the_first_sample_grid_after_a_resume_has_its_loss_by_noise_plot(
  trained, tmp_path, monkeypatch
):
  """Resumed at step 4 with log windows of 4 steps and a grid every 6: the grid at 6 comes
  before the resumed process's first window ends (at 8), and the windows before the resume
  were the stopped process's, so it had no loss-by-noise plot (a fresh run's grid at 6 plots
  the window ending at 4). It plots the steps since the resume (5-6)."""
  import numpy as np

  from infonoise_jax import diagnostics
  from infonoise_jax.evaluation import plots

  real_write, real_plot, seen, plotted = diagnostics.write_images, plots.loss_by_noise_plot, {}, {}

  def write_images(run, state, writer, workdir, step, log=None):
    seen[step] = (log.window_start, log.loss_by_log_sigma is None)
    return real_write(run, state, writer, workdir, step, log)

  def loss_by_noise_plot(edges, loss, title=""):
    plotted[title] = loss
    return real_plot(edges, loss, title=title)

  monkeypatch.setattr(diagnostics, "write_images", write_images)
  monkeypatch.setattr(plots, "loss_by_noise_plot", loss_by_noise_plot)
  workdir = _copy(trained, tmp_path)
  config = _config(**{"train.num_steps": 12, "train.log_every": 4, "train.sample_every": 6})
  train.train_and_evaluate(config, str(workdir))
  assert seen[6] == (4, True)  # no window written since the resume: the open one, steps 5-6
  assert set(plotted) == {"infonoise @ step 6", "infonoise @ step 12"}
  assert np.isfinite(plotted["infonoise @ step 6"]).any()
  pngs = sorted(p.name for p in (workdir / "images").glob("loss_by_log_sigma_*.png"))
  # 4: the first process's final grid
  assert pngs == [f"loss_by_log_sigma_{step:07d}.png" for step in (4, 6, 12)]


def test_a_resume_from_an_older_checkpoint_logs_no_step_twice(tmp_path):
  """An attempt killed after logging steps past its last checkpoint (here: the newest
  checkpoint removed) is resumed from the older one: TensorBoard must show each step once, in
  order, and the attempt's original event files are kept aside."""
  import shutil

  from tensorboard.backend.event_processing import event_accumulator

  workdir = tmp_path / "run"
  config = _config(**{"train.num_steps": 6, "train.checkpoint_every": 3, "train.log_every": 1})
  train.train_and_evaluate(config, str(workdir))
  shutil.rmtree(workdir / "checkpoints" / "6")  # as if killed between logging 6 and saving it
  (workdir / "samples.npz").unlink()
  train.train_and_evaluate(config, str(workdir))  # resumes at 3, logs 4..6 again
  acc = event_accumulator.EventAccumulator(str(workdir / "tensorboard"), purge_orphaned_data=False)
  acc.Reload()
  steps = [e.step for e in acc.Scalars("loss")]
  assert steps == [1, 2, 3, 4, 5, 6], steps
  aside = list(workdir.glob("tensorboard.after-3-*"))
  assert len(aside) == 1 and list(aside[0].glob("events.out.tfevents.*"))


def test_a_sigterm_while_the_logs_are_created_stops_and_the_same_command_starts_again(
  tmp_path, monkeypatch
):
  """SIGTERM as the loop creates its TensorBoard writer (the first file of the attempt): the
  loop's own preemption flag is already installed and is read once the step is compiled, so
  the run stops before its first step (exit 75, nothing to save) and the requeued command
  trains from the start (the attempt's logs moved aside)."""
  import os
  import signal

  from infonoise_jax import metrics

  real = metrics.create_writer
  calls = []

  def terminated(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
      os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)

  monkeypatch.setattr(metrics, "create_writer", terminated)
  workdir = tmp_path / "run"
  with pytest.raises(checkpointing.StoppedOutsideLoop):
    train.train_and_evaluate(_config(**{"train.num_steps": 4}), str(workdir))
  assert checkpointing.saved_steps(str(workdir)) == []
  train.train_and_evaluate(_config(**{"train.num_steps": 4}), str(workdir))
  assert checkpointing.saved_steps(str(workdir))[-1] == 4


def test_num_steps_below_the_saved_step_says_the_run_is_past_it(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _snapshot(workdir)
  with pytest.raises(workdir_lib.WorkdirError, match="already at step 4, past train.num_steps=2"):
    train.train_and_evaluate(_config(**{"train.num_steps": 2}), str(workdir))
  assert _snapshot(workdir) == before


def test_workdir_that_is_a_file_fails_before_loading_data(tmp_path):
  path = tmp_path / "afile"
  path.write_text("not a run")
  config = _config(
    **{"data.name": "fashion_mnist_local", "data.local_dir": str(tmp_path / "nodata")}
  )
  with pytest.raises(workdir_lib.WorkdirError, match="is a file, not a directory"):
    train.train_and_evaluate(config, str(path))


# ------------------------------------------------------------------ 8. one-line errors


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_one_line_error_and_debug_traceback(tmp_path, capsys, monkeypatch, command):
  import importlib

  module = importlib.import_module(f"infonoise_jax.{command}")
  args = [f"--workdir={tmp_path / 'no_run'}"]
  monkeypatch.delenv("INFONOISE_DEBUG", raising=False)
  with pytest.raises(SystemExit) as info:
    module.main(args)
  assert info.value.code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and "config.json not found" in err[0]
  with pytest.raises(FileNotFoundError, match="config.json"):
    module.main([*args, "--debug"])
  monkeypatch.setenv("INFONOISE_DEBUG", "1")
  with pytest.raises(FileNotFoundError, match="config.json"):
    module.main(args)


def test_a_missing_optional_package_is_one_line_and_a_broken_import_a_traceback(
  capsys, monkeypatch
):
  """An ImportError that names what to install (gcsfs for a gs:// path without the [gcs]
  extra) is the user's to fix: one line. Any other ImportError is a bug: its traceback. A
  message's notes (where TFDS lists names it knows) stay in the line."""
  from infonoise_jax import cli

  monkeypatch.delenv("INFONOISE_DEBUG", raising=False)

  def raise_(e):
    def fn():
      raise e

    return fn

  with pytest.raises(SystemExit) as info:
    cli.run_command(raise_(ImportError("Please install gcsfs to access Google Storage")))
  err = capsys.readouterr().err.strip().splitlines()
  assert info.value.code == 1 and len(err) == 1
  assert err[0].startswith("error: Please install gcsfs")
  with pytest.raises(ImportError, match="cannot import name"):
    cli.run_command(raise_(ImportError("cannot import name 'x' from 'y'")))
  noted = ValueError("BuilderConfig xyz not found. Close names:")
  noted.add_note("plain, mnist_like")
  with pytest.raises(SystemExit):
    cli.run_command(raise_(noted))
  assert "Close names: plain, mnist_like" in capsys.readouterr().err
  # A shared check names the trainer's --config.KEY; sample/evaluate/diagnose take --set.
  shared = ValueError("fixes: a shorter --config.data.seq_len")
  for takes_set, says in ((True, cli.SET_HINT), (False, "")):
    with pytest.raises(SystemExit):
      cli.run_command(raise_(shared), takes_set=takes_set)
    assert f"seq_len{says} (--debug" in capsys.readouterr().err


def test_a_ctrl_c_that_stops_at_once_is_one_line(capsys, monkeypatch):
  """A training run's second Ctrl-C (or a sample command's first) stops at once: one line
  saying what was kept and how to go on, exit 130, not a ~55-line KeyboardInterrupt
  traceback; --debug keeps the traceback."""
  from infonoise_jax import cli

  monkeypatch.delenv("INFONOISE_DEBUG", raising=False)

  def interrupted():
    raise KeyboardInterrupt

  with pytest.raises(SystemExit) as info:
    cli.run_command(interrupted)
  err = capsys.readouterr().err.strip().splitlines()
  assert info.value.code == 130 and len(err) == 1
  assert err[0].startswith("Interrupted by Ctrl-C: stopped at once, nothing more saved")
  with pytest.raises(KeyboardInterrupt):
    cli.run_command(interrupted, debug=True)


def test_closed_event_loop_noise_is_dropped_and_other_unraisables_printed(capsys, monkeypatch):
  from infonoise_jax import cli

  class RaisesWhenFreed:
    def __init__(self, e):
      self.e = e

    def __del__(self):
      raise self.e

  monkeypatch.setattr(sys, "unraisablehook", cli.quiet_closed_event_loops)
  RaisesWhenFreed(RuntimeError("Event loop is closed"))  # freed at once: Python reports it
  assert capsys.readouterr().err == ""
  RaisesWhenFreed(RuntimeError("something else"))
  assert "RuntimeError: something else" in capsys.readouterr().err


def test_a_periodic_save_starts_within_half_an_interval_with_many_steps_in_flight(
  tmp_path, monkeypatch
):
  """checkpoint_every 8 with 32 steps in flight: the save of step 8 must start by step
  8 + 1 + 4, not wait for the next checkpoint (16), so a kill costs at most 1.5 intervals."""
  dispatched, saves = [], []  # the loop's steps (one log.add each), (saved step, loop step)
  add, save = train._WindowLogger.add, train._save

  def counted(self, step_metrics):
    dispatched.append(1)
    return add(self, step_metrics)

  def recorded(run, ckpt, step, state, history, background=False):
    saves.append((step, len(dispatched)))
    return save(run, ckpt, step, state, history, background)

  monkeypatch.setattr(train._WindowLogger, "add", counted)
  monkeypatch.setattr(train, "_save", recorded)
  config = _config(
    **{
      "train.checkpoint_every": 8,
      "train.max_steps_in_flight": 32,
      "train.num_steps": 24,
    }
  )
  train.train_and_evaluate(config, str(tmp_path / "run"))
  started = dict(saves)
  assert sorted(started) == [8, 16, 24]
  assert started[8] == 8 + 1 + 4 and started[16] == 16 + 1 + 4, saves


@pytest.mark.parametrize("poison", ["loss", "params"])
def test_a_deferred_save_is_checked_against_its_next_step(tmp_path, monkeypatch, poison):
  """A periodic save is checked a few steps later (train._PendingSave) against the loop's own
  next step: a NaN there, or in the state, keeps the save from ever happening."""
  import jax
  import jax.numpy as jnp

  from infonoise_jax import metrics, steps

  make = steps.make_train_step

  def poisoned(*args, **kwargs):
    step_fn = make(*args, **kwargs)

    def fn(state, batch):
      new, m = step_fn(state, batch)
      if poison == "loss":  # step 5's loss: the state of step 4 is finite, its next step not
        m = {**m, "loss": jnp.where(new.step == 5, jnp.nan, m["loss"])}
      else:  # the state of step 4 holds a NaN
        nan = lambda x: jnp.where(new.step >= 4, jnp.nan, x)
        new = new.replace(params=jax.tree.map(nan, new.params))
      return new, m

    return fn

  monkeypatch.setattr(steps, "make_train_step", poisoned)
  config = _config(
    **{"train.checkpoint_every": 2, "train.max_steps_in_flight": 1, "train.num_steps": 12}
  )
  workdir = tmp_path / "run"
  with pytest.raises(metrics.NonFiniteError, match="Not saving the state of step 4") as info:
    train.train_and_evaluate(config, str(workdir))
  assert checkpointing.saved_steps(str(workdir)) == [2]
  assert f"last good checkpoint is kept at {workdir / 'checkpoints'}/2" in str(info.value)
  assert "between steps 4 and 5" in str(info.value)


def test_a_nan_while_a_save_waits_for_its_guard_still_saves_the_good_state(tmp_path, monkeypatch):
  """The periodic save of step 4 is finished up to max_steps_in_flight + 1 steps later; a NaN
  seen in between (step 6's loss) must not drop it: its state and guard (step 5) are finite."""
  import jax.numpy as jnp

  from infonoise_jax import metrics, steps

  make = steps.make_train_step

  def poisoned(*args, **kwargs):
    step_fn = make(*args, **kwargs)

    def fn(state, batch):
      new, m = step_fn(state, batch)
      return new, {**m, "loss": jnp.where(new.step >= 6, jnp.nan, m["loss"])}

    return fn

  monkeypatch.setattr(steps, "make_train_step", poisoned)
  config = _config(
    **{
      "train.checkpoint_every": 4,
      "train.max_steps_in_flight": 8,
      "train.log_every": 1,
      "train.num_steps": 12,
    }
  )
  workdir = tmp_path / "run"
  with pytest.raises(metrics.NonFiniteError, match="loss became NaN between steps 5 and 6") as e:
    train.train_and_evaluate(config, str(workdir))
  assert checkpointing.saved_steps(str(workdir)) == [4]
  assert f"last good checkpoint is kept at {workdir / 'checkpoints'}/4" in str(e.value)


@pytest.mark.parametrize("where", ["Run", "_train", "CompileAhead.step"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_sigterm_outside_the_steps_exits_as_a_preemption_and_frees_the_workdir(
  tmp_path, monkeypatch, where, sig
):
  """SIGTERM while the data loads (Run), while the locked run restores / compiles (_train), or
  while the step loop waits for the step's compile (CompileAhead.step, the step loop's signal
  handler already installed): StoppedOutsideLoop (exit code 75, the command's preemption code)
  instead of a kill that leaves run.lock behind, or a first step taken and saved after a long
  compile; the lock is released and the previous SIGTERM handler is back. A first Ctrl-C
  (SIGINT) there is the same stop, named as such (it printed a KeyboardInterrupt traceback
  and exited 130 while the data loaded or the checkpoint restored)."""
  import os
  import signal

  sig = getattr(signal, sig)

  owner = train.CompileAhead if where == "CompileAhead.step" else train
  name = where.split(".")[-1]
  real = getattr(owner, name)

  def terminated(*args, **kwargs):
    if where != "Run":
      assert (tmp_path / workdir_lib.LOCK_FILE).exists()  # held while it runs
    os.kill(os.getpid(), sig)
    return real(*args, **kwargs)

  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  monkeypatch.setattr(owner, name, terminated)
  config = load_config_file(ROOT / "configs" / "test.py")
  config.train.num_steps = 2
  with pytest.raises(checkpointing.StoppedOutsideLoop) as e:
    train.train_and_evaluate(config, str(tmp_path))
  assert e.value.exit_code == checkpointing.PREEMPTED_EXIT_CODE == 75
  assert "rerun the same command" in str(e.value)
  by = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
  assert f"Stopped by {by} outside the training steps" in str(e.value)
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()
  assert not checkpointing.saved_steps(str(tmp_path))  # nothing half-written
  assert {s: signal.getsignal(s) for s in before} == before


def test_sigterm_inside_a_gc_callback_still_stops_before_the_first_step(tmp_path, monkeypatch):
  """A SIGTERM whose handler runs inside a garbage-collection callback (jax frees device
  buffers from one) cannot raise there: Python prints and drops the exception, and the run
  used to train on. The handler defers it; the loop stops before its first step, exit 75."""
  import gc
  import os
  import signal

  fired = []

  def callback(phase, info):  # stands in for jax's _xla_gc_callback
    del info
    if phase == "start" and not fired:
      fired.append(True)
      os.kill(os.getpid(), signal.SIGTERM)
      for _ in range(1000):  # the handler runs at one of these bytecodes, inside the callback
        pass

  real = train._train

  def collect_then_train(*args, **kwargs):
    gc.callbacks.append(callback)
    try:
      gc.collect()
    finally:
      gc.callbacks.remove(callback)
    return real(*args, **kwargs)

  monkeypatch.setattr(train, "_train", collect_then_train)
  dropped = []  # exceptions Python could not raise (printed as "Exception ignored in ...")
  monkeypatch.setattr(sys, "unraisablehook", dropped.append)
  config = load_config_file(ROOT / "configs" / "test.py")
  config.train.num_steps = 2
  with pytest.raises(checkpointing.StoppedOutsideLoop):
    train.train_and_evaluate(config, str(tmp_path))
  assert fired and not dropped  # deferred, not raised inside the callback
  assert not checkpointing.saved_steps(str(tmp_path))  # stopped before any step
  assert not (tmp_path / "tensorboard").exists()
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()
  checkpointing._STOP_REQUESTED.clear()


def test_sigterm_inside_a_restore_keeps_every_checkpoint(trained8, tmp_path, monkeypatch):
  """The signal lands inside Orbax's reads of a resume (the meta read, then the state restore
  would follow), under this project's error handling around them, which must not take it for
  a corrupt step (moved aside) or swallow it (as an Exception, it was one or the other)."""
  import os
  import signal
  import time

  import orbax.checkpoint as ocp

  workdir = _copy(trained8, tmp_path)
  real = ocp.CheckpointManager.restore

  def terminated(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1.0)  # the handler raises here (sleep is interrupted)
    return real(self, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "restore", terminated)
  with pytest.raises(checkpointing.StoppedOutsideLoop):
    train.train_and_evaluate(_config(**{"train.num_steps": 12}), str(workdir))
  assert checkpointing.saved_steps(str(workdir)) == [4, 8]
  assert not [p for p in workdir.iterdir() if "corrupt" in p.name]
  assert not (workdir / workdir_lib.LOCK_FILE).exists()


def test_a_run_ending_far_above_its_median_loss_is_said_to_have_diverged():
  """Finite divergence (loss 2e10 at the end of a run with lr 1e9: exit 0, "Finished") stops no
  NaN check; the summary says so against the median window, robust to small noisy windows."""
  windows = [(2.0, 10), (0.5, 20), (0.4, 30), (0.45, 40)]
  assert train.diverged_warning(windows) is None  # the early high window is not the median
  assert train.diverged_warning([(0.1, 10), (50.0, 20)]) is None  # too few windows to say
  message = train.diverged_warning([*windows, (2.25e10, 50)])
  assert "step 50" in message and "optim.lr" in message
  assert f"{2.25e10 / 0.5:.0f}x" in message  # median of the five windows: 0.5
  assert train.diverged_warning([*windows, (4.9, 50)]) is None  # 9.8x: under the factor
  assert train.diverged_warning([(-3.0, 10), (-2.0, 20), (5.0, 30)]) is None  # negative losses


def test_the_divergence_warning_is_logged_at_the_end_of_a_run(tmp_path, monkeypatch, caplog):
  """The wiring: with the factor below 1 every run's last window is 'far above' its median."""
  overrides = {"train.num_steps": 8, "train.log_every": 2}
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(_config(**overrides), str(tmp_path / "a"))
  assert not any("probably diverged" in r.getMessage() for r in caplog.records)
  monkeypatch.setattr(train, "DIVERGED_FACTOR", 1e-3)
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(_config(**overrides), str(tmp_path / "b"))
  said = [r.getMessage() for r in caplog.records if "probably diverged" in r.getMessage()]
  assert len(said) == 1 and "of this run's 4 log windows" in said[0]


def test_a_step_trained_before_the_data_moved_is_named_when_scored(tmp_path):
  """A resume may move a run to other data (data.path, recorded in config_history.jsonl);
  `evaluate --step` of a checkpoint from before that reads config.json, the data after it, so
  it says which data that step trained on and the --set that scores it against that data."""
  history = [
    {"resumed_at_step": 100, "changes": {"train.num_steps": {"from": 100, "to": 200}}},
    {"resumed_at_step": 200, "changes": {"data.path": {"from": "/a", "to": "/b"}}},
  ]
  text = "\n".join(json.dumps(h) for h in history) + "\n{damaged\n"
  (tmp_path / resume.HISTORY_FILE).write_text(text)
  (note,) = resume.data_changes_since(str(tmp_path), 150)
  assert note.startswith("step 150 was trained on data.path='/a', changed to '/b' when the run")
  assert note.endswith("--set data.path=/a scores it against the data it trained on")
  assert len(resume.data_changes_since(str(tmp_path), 200)) == 1  # the checkpoint at the resume
  assert resume.data_changes_since(str(tmp_path), 201) == []
  assert resume.data_changes_since(str(tmp_path / "no_history"), 1) == []


def test_a_preemption_mid_window_logs_the_steps_it_took(tmp_path, monkeypatch):
  """SIGTERM at step 3 of a 4-step log window: the window's 3 steps were never logged (the
  stopped attempt's loss ended at the window before). They are now logged at the stopped step
  and kept across the resume, whose first window is the rest of the interval."""
  import os
  import signal

  from tensorboard.backend.event_processing import event_accumulator

  from infonoise_jax import diagnostics

  real = diagnostics.write_images

  def signalled(run, state, writer, workdir, step, log):
    os.kill(os.getpid(), signal.SIGTERM)
    return real(run, state, writer, workdir, step, log)

  monkeypatch.setattr(diagnostics, "write_images", signalled)
  overrides = {"train.num_steps": 8, "train.log_every": 4, "train.sample_every": 3}
  overrides["train.checkpoint_every"] = 100
  workdir = tmp_path / "run"
  with pytest.raises(checkpointing.Preempted, match="step 3 saved"):
    train.train_and_evaluate(_config(**overrides), str(workdir))
  monkeypatch.setattr(diagnostics, "write_images", real)
  train.train_and_evaluate(_config(**overrides), str(workdir))
  steps = []
  for events in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
    acc = event_accumulator.EventAccumulator(str(events))
    acc.Reload()
    steps += [e.step for e in acc.Scalars("loss")] if "loss" in acc.Tags()["scalars"] else []
  assert sorted(steps) == [3, 4, 8]
  assert [s for s, _ in diagnostics.load_history(str(workdir), 8)] == [3, 4, 8]


def test_a_resume_without_saved_history_rows_says_where_the_plot_starts(tmp_path, caplog):
  """A run started by code from before the rows were saved resumed with a heatmap that began
  at the resume, without a word (2026-12-07 probe)."""
  from infonoise_jax import diagnostics

  with caplog.at_level("INFO"):
    assert diagnostics.load_history(str(tmp_path), 20) == []
  assert "holds no rows up to step 20" in caplog.text
  assert "the schedule-history plot starts at the resume" in caplog.text
  caplog.clear()
  with caplog.at_level("INFO"):
    assert diagnostics.load_history(str(tmp_path), 0) == []  # a new run: nothing to say
  assert caplog.text == ""
