"""Faults a user meets (docs/reliability.md): each test reproduces one and checks the outcome.

In-process, with configs/test.py and a few steps; the command-line cases (exit codes, one-line
errors, SIGTERM on one of two processes) are in main_test.py.
"""

import json
import pathlib

import pytest

from infonoise_jax import checkpointing, resume, train
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
  ],
)
def test_refused_resume_writes_nothing(trained, tmp_path, overrides, key):
  workdir = _copy(trained, tmp_path)
  before = _snapshot(workdir)
  with pytest.raises(resume.ResumeRefusedError, match=key.replace(".", r"\.")) as info:
    train.train_and_evaluate(_config(**overrides), str(workdir))
  assert "Nothing was written" in str(info.value)
  assert _snapshot(workdir) == before  # config.json, checkpoints and logs untouched
  assert "train.num_steps" not in str(info.value)  # an allowed change is not named as refused


def test_allowed_resume_changes_are_recorded_in_the_history(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  train.train_and_evaluate(_config(**{"train.num_steps": 6, "train.log_every": 3}), str(workdir))
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


def test_resumable_keys_exist_in_the_default_config():
  from infonoise_jax.validation import DEFAULT_CONFIG_PATH, _flat_keys

  keys = _flat_keys(load_config_file(DEFAULT_CONFIG_PATH))
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
