"""Test setup: 8 fake CPU devices, before any JAX backend is initialised."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax

jax.config.update("jax_num_cpu_devices", 8)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_stored_train_steps(monkeypatch):
  """Tests train in one process, some with monkeypatched steps, and an in-process main()
  turns the persistent cache on for all later tests: a step stored by one test must not be
  loaded by another. Tests of the store point step_executables.folder at their own folder."""
  from infonoise_jax import step_executables

  monkeypatch.setattr(step_executables, "folder", lambda: None)
