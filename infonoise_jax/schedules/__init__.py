"""Training noise distributions and the registry that builds one from the config.

`make_schedule(config)` returns the schedule named by `config.schedule.name`; every class in
`SCHEDULES` implements the `Schedule` protocol (schedules/base.py) and builds itself from the
whole config with `from_config(config)`. Adding a schedule: docs/schedules.md.
"""

import ml_collections

from infonoise_jax.schedules.adaptive import CDCD, EDM2, IDDPM, VDMPP
from infonoise_jax.schedules.base import (
  HasLossWeights,
  HasProfile,
  Schedule,
  StatelessSchedule,
  weighted_density,
)
from infonoise_jax.schedules.fixed import Cosine, Laplace, LogitNormal, LogNormal, LogUniform
from infonoise_jax.schedules.infonoise import InfoNoise

# The one list of schedule names (configs/default.py's variants and docs follow it).
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


PROFILED = tuple(name for name, cls in SCHEDULES.items() if issubclass(cls, HasProfile))
FIXED = tuple(name for name, cls in SCHEDULES.items() if issubclass(cls, StatelessSchedule))


def variant_schedule(variant: str) -> str | None:
  """The schedule a config's comma list of variants names (`configs/default.py:fashion,vdmpp`),
  or None; naming two is an error (the last one used to win in silence)."""
  named = list(dict.fromkeys(t.strip() for t in variant.split(",") if t.strip() in SCHEDULES))
  if len(named) > 1:
    raise ValueError(
      f"Config variants {variant!r} name two schedules ({' and '.join(named)}); a run trains "
      "with one: keep one of them"
    )
  return named[0] if named else None


def has_profile(schedule: Schedule | str) -> bool:
  """Whether a schedule (or the one registered under a name) learns a profile (`HasProfile`)."""
  if isinstance(schedule, str):
    return schedule in PROFILED
  return isinstance(schedule, HasProfile)


def config_sections(name: str) -> tuple[str, ...] | None:
  """The `schedule.<section>`s that the schedule registered under `name` reads: its own and
  those it builds on (InfoNoise's and the adaptive peers' base law reads schedule.lognormal).
  A resume compares only these (resume.py). None (an unknown name, or a class that does not
  declare `config_sections`): every section counts."""
  return getattr(SCHEDULES.get(name), "config_sections", None)


def make_schedule(config: ml_collections.ConfigDict) -> Schedule:
  """The schedule named by config.schedule.name, built from the whole config."""
  name = config.schedule.name
  if name not in SCHEDULES:
    raise ValueError(f"schedule.name must be one of {', '.join(sorted(SCHEDULES))}; got {name!r}")
  missing = [s for s in config_sections(name) or () if s not in config.schedule]
  if missing:  # a schedule registered without its keys: said, not an AttributeError traceback
    sections = ", ".join(f"schedule.{s}" for s in missing)
    raise ValueError(
      f"schedule.name={name!r} reads {sections}, which the config does not define: add the "
      "section with its keys to configs/default.py (docs/schedules.md, step 2)"
    )
  return SCHEDULES[name].from_config(config)


__all__ = [
  "CDCD",
  "EDM2",
  "FIXED",
  "HasLossWeights",
  "HasProfile",
  "PROFILED",
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
  "config_sections",
  "has_profile",
  "make_schedule",
  "weighted_density",
]
