"""Tests of steps.py on its own: golden train-step values, init, the denoiser, the loss."""

import json
import pathlib

import golden
import numpy as np
import pytest

FIXTURE = pathlib.Path(__file__).with_name("fixtures") / "golden_train_step.json"


@pytest.mark.parametrize("schedule", golden.SCHEDULES)
def test_train_steps_match_recorded_golden_values(schedule):
  # Recorded from the code before the evaluation-side refactor (issue 8); a change here is a
  # change in what training computes, and needs a re-recording with its reason in the commit.
  want = json.loads(FIXTURE.read_text())[schedule]
  got = golden.run_golden(schedule)
  assert sorted(got["schedule_state"]) == sorted(want["schedule_state"])
  np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
  np.testing.assert_allclose(got["learning_rate"], want["learning_rate"], rtol=1e-6)
  for key in ("params", "ema_params", "update"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
  for key, value in want["schedule_state"].items():
    np.testing.assert_allclose(got["schedule_state"][key], value, rtol=1e-5, atol=1e-6, err_msg=key)
