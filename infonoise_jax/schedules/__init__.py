"""Training noise distributions and the registry that builds one from the config.

`make_schedule(config)` returns the schedule named by `config.schedule.name`; every class in
`SCHEDULES` implements the `Schedule` protocol (schedules/base.py) and builds itself from the
whole config with `from_config(config)`. Adding a schedule: docs/schedules.md.
"""

import ml_collections

from infonoise_jax.schedules.adaptive import CDCD, EDM2, IDDPM, VDMPP
from infonoise_jax.schedules.base import Schedule, StatelessSchedule
from infonoise_jax.schedules.fixed import Cosine, Laplace, LogitNormal, LogNormal, LogUniform
from infonoise_jax.schedules.infonoise import InfoNoise

SCHEDULES: dict[str, type] = {
  "infonoise": InfoNoise,
  "lognormal": LogNormal,
  "loguniform": LogUniform,
  "logitnormal": LogitNormal,
  "laplace": Laplace,
  "cosine": Cosine,
  "cdcd": CDCD,
  "vdmpp": VDMPP,
  "iddpm": IDDPM,
  "edm2": EDM2,
}


def make_schedule(config: ml_collections.ConfigDict) -> Schedule:
  """The schedule named by config.schedule.name, built from the whole config."""
  name = config.schedule.name
  if name not in SCHEDULES:
    raise ValueError(f"schedule.name must be one of {', '.join(sorted(SCHEDULES))}; got {name!r}")
  return SCHEDULES[name].from_config(config)


__all__ = [
  "CDCD",
  "EDM2",
  "IDDPM",
  "SCHEDULES",
  "VDMPP",
  "Cosine",
  "InfoNoise",
  "Laplace",
  "LogNormal",
  "LogUniform",
  "LogitNormal",
  "Schedule",
  "StatelessSchedule",
  "make_schedule",
]
