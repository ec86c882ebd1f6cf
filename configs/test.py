"""A tiny config for tests: MLP on digits, a few steps, frequent refreshes and logs."""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
  "default_config", pathlib.Path(__file__).with_name("default.py")
)
default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default)


def get_config(variant: str = ""):
  c = default.get_config(variant)
  c.model.name = "mlp"
  c.model.hidden_dims = (64, 64)
  c.train.batch_size = 16
  c.train.num_steps = 8
  c.train.log_every = 2
  c.train.checkpoint_every = 4
  c.train.sample_every = 0
  c.train.num_samples = 8
  c.optim.warmup_steps = 2
  c.sampler.num_steps = 7  # the fewest Karras levels that EDM's Heun is tested on (ratio <= 30)
  c.schedule.infonoise.num_bins = 16
  c.schedule.infonoise.warmup_steps = 2
  c.schedule.infonoise.refresh_every = 2
  c.schedule.infonoise.min_count = 1
  return c
