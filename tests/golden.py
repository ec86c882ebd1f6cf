"""Two train steps of configs/test.py per schedule, summarized as numbers (golden values).

Shared by tests/steps_test.py (which compares against tests/fixtures/golden_train_step.json)
and by the recording command, run only when the step's behaviour is meant to change:

  .venv/bin/python tests/golden.py --out=tests/fixtures/golden_train_step.json
"""

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax
import numpy as np

from infonoise_jax import steps
from infonoise_jax.data import Pipeline, load_source
from infonoise_jax.models import make_model
from infonoise_jax.schedules import make_schedule
from infonoise_jax.train_state import make_optimizer
from infonoise_jax.validation import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The estimator, binned importance sampling, a learned loss weight.
SCHEDULES = ("infonoise", "vdmpp", "edm2")
NUM_STEPS = 2  # InfoNoise refreshes at the end of step 2 under configs/test.py


def golden_config(schedule: str):
  c = load_config_file(ROOT / "configs" / "test.py", schedule)
  c.schedule.adaptive.warmup_steps = 1  # the adaptive peers adapt from their first update
  return c


def _checksum(tree) -> list[float]:
  """[sum, sum of squares] over every leaf, in float64."""
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]
  return [float(sum(x.sum() for x in leaves)), float(sum((x * x).sum() for x in leaves))]


def run_golden(schedule: str) -> dict:
  """Runs NUM_STEPS jitted train steps on one device; returns the summary numbers."""
  config = golden_config(schedule)
  source = load_source(config)
  model = make_model(config, source.shape)
  sched = make_schedule(config)
  optimizer = make_optimizer(config)
  pipeline = Pipeline(source, config.train.batch_size, config.seed, 0, 1)
  init = lambda: steps.init_state(model, sched, optimizer, source.shape, config.seed)
  state = jax.jit(init)()
  init_params = state.params
  train_step = jax.jit(steps.make_train_step(config, model, sched, optimizer))
  losses, lrs = [], []
  for step in range(NUM_STEPS):
    state, metrics = train_step(state, pipeline.batch(step))
    losses.append(float(metrics["loss"]))
    lrs.append(float(metrics["learning_rate"]))
  state, init_params = jax.device_get((state, init_params))
  flat = jax.tree_util.tree_flatten_with_path(state.schedule_state)[0]
  return {
    "loss": losses,
    "learning_rate": lrs,
    "params": _checksum(state.params),
    "ema_params": _checksum(state.ema_params),
    "update": _checksum(jax.tree.map(lambda a, b: a - b, state.params, init_params)),
    "schedule_state": {jax.tree_util.keystr(p): _checksum(v) for p, v in flat},
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True)
  args = p.parse_args()
  record = {name: run_golden(name) for name in SCHEDULES}
  with open(args.out, "w") as f:
    json.dump(record, f, indent=1, sort_keys=True)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
