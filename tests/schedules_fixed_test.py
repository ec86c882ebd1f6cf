"""Fixed schedules: samplers follow their closed-form densities; the registry builds each name."""

import math

import jax
import numpy as np
import pytest

pytest.importorskip("infonoise_jax.schedules.infonoise")  # the registry imports InfoNoise

from configs.default import get_config
from infonoise_jax import schedules
from infonoise_jax.schedules import fixed

N_SAMPLES = 100_000
# KS critical value at alpha = 0.001 is 1.95 / sqrt(N); samples use fixed seeds.
KS_TOL = 1.95 / math.sqrt(N_SAMPLES)
GRID_G = np.linspace(-25.0, 25.0, 200_001)


def _config(**overrides):
  c = get_config()
  c.update_from_flattened_dict(overrides)
  return c


CASES = {
  "lognormal": ("lognormal", {"schedule.lognormal.p_mean": -0.4, "schedule.lognormal.p_std": 1.0}),
  "loguniform": ("loguniform", {"edm.sigma_min": 0.01, "edm.sigma_max": 20.0}),
  "logitnormal": (
    "logitnormal",
    {"schedule.logitnormal.mean": 0.5, "schedule.logitnormal.std": 0.8},
  ),
  "laplace": ("laplace", {"schedule.laplace.mu": 1.0, "schedule.laplace.b": 0.7}),
  "cosine": ("cosine", {}),
  "cosine_shifted": ("cosine", {"schedule.cosine.shift": 1.5}),
  # every registered fixed law at configs/default.py's values, so that one added as
  # docs/schedules.md says is checked too (a density that does not integrate to 1, a sampler
  # that disagrees with it) without an entry here
  **{f"{name}_defaults": (name, {}) for name in schedules.FIXED},
}


def _make(case):
  name, overrides = CASES[case]
  return schedules.make_schedule(_config(**{"schedule.name": name, **overrides}))


@pytest.mark.parametrize("case", sorted(CASES))
def test_sampler_matches_density(case):
  schedule = _make(case)
  sigma_B, weight_B = schedule.sample({}, jax.random.key(1), N_SAMPLES)
  l_B = np.sort(np.log(np.asarray(sigma_B, np.float64)))
  pdf_G = np.asarray(schedule.density({}, GRID_G), np.float64)
  # The CDF of ln sigma by integrating `density` (trapezoid rule, step 2.5e-4).
  cdf_G = np.concatenate([[0.0], np.cumsum(0.5 * (pdf_G[1:] + pdf_G[:-1]) * np.diff(GRID_G))])
  assert abs(cdf_G[-1] - 1.0) < 1e-3  # density integrates to 1 over ln sigma
  cdf_B = np.interp(l_B, GRID_G, cdf_G)
  ecdf_hi = np.arange(1, l_B.size + 1) / l_B.size
  ks = max(np.max(ecdf_hi - cdf_B), np.max(cdf_B - (ecdf_hi - 1.0 / l_B.size)))
  assert ks < KS_TOL, f"KS statistic {ks:.4f} >= {KS_TOL:.4f}"
  np.testing.assert_array_equal(np.asarray(weight_B), 1.0)


def test_logitnormal_is_sd3_construction():
  """sigma = t / (1 - t) with logit(t) ~ N(m, s^2): compare quantiles with the schedule."""
  schedule = _make("logitnormal")
  rng = np.random.default_rng(0)
  t = 1.0 / (1.0 + np.exp(-(0.5 + 0.8 * rng.standard_normal(N_SAMPLES))))
  ref = np.log(t / (1.0 - t))
  ours = np.log(np.asarray(schedule.sample({}, jax.random.key(2), N_SAMPLES)[0]))
  q = np.linspace(0.05, 0.95, 19)
  np.testing.assert_allclose(np.quantile(ours, q), np.quantile(ref, q), atol=0.05)


def test_cosine_matches_iddpm_alpha_bar():
  """Shift 0: sigma^2 = (1 - alpha_bar) / alpha_bar with alpha_bar = cos^2(pi t / 2)."""
  schedule = _make("cosine")
  t_lo, t_hi = schedule._t_range()
  t = np.linspace(t_lo, t_hi, 101)
  alpha_bar = np.cos(0.5 * np.pi * t) ** 2
  sigma = np.sqrt((1.0 - alpha_bar) / alpha_bar)
  np.testing.assert_allclose(sigma[[0, -1]], [0.002, 80.0], rtol=1e-6)
  # P(sigma <= sigma(t)) is linear in t, so the density's CDF must be too.
  l_G = np.log(sigma)
  dense_G = np.linspace(l_G[0], l_G[-1], 100_001)
  pdf_G = np.asarray(schedule.density({}, dense_G), np.float64)
  cdf_G = np.concatenate([[0.0], np.cumsum(0.5 * (pdf_G[1:] + pdf_G[:-1]) * np.diff(dense_G))])
  np.testing.assert_allclose(np.interp(l_G, dense_G, cdf_G), (t - t_lo) / (t_hi - t_lo), atol=1e-4)


def test_support_within_sigma_range():
  for case in ("loguniform", "cosine", "cosine_shifted"):
    schedule = _make(case)
    sigma_B = np.asarray(schedule.sample({}, jax.random.key(3), 4096)[0])
    assert sigma_B.min() >= schedule.sigma_min and sigma_B.max() <= schedule.sigma_max


def test_settings_are_static_and_state_is_empty():
  a, b = _make("laplace"), _make("laplace")
  assert a == b and hash(a) == hash(b)
  sample = jax.jit(lambda s, k: s.sample({}, k, 4), static_argnums=0)
  assert sample(a, jax.random.key(0))[0].shape == (4,)
  state, metrics = a.update({}, None, None, None)
  assert state == {} and metrics == {}


@pytest.mark.parametrize(
  "key,value",
  [
    ("schedule.lognormal.p_std", 0.0),
    ("schedule.logitnormal.std", -1.0),
    ("schedule.laplace.b", 0.0),
    ("schedule.lognormal.p_std", math.inf),  # passed > 0, then the first steps were NaN
    ("schedule.laplace.b", math.inf),
    ("schedule.cosine.shift", float("nan")),
    ("edm.sigma_min", 0.0),
    ("edm.sigma_max", 0.001),
  ],
)
def test_invalid_values_name_the_key(key, value):
  cls = {"lognormal": fixed.LogNormal, "logitnormal": fixed.LogitNormal, "laplace": fixed.Laplace}
  schedule_cls = cls.get(key.split(".")[1], fixed.Cosine)
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    schedule_cls.from_config(_config(**{key: value}))


def test_registry_builds_every_name_and_its_config_variant():
  for name, cls in schedules.SCHEDULES.items():
    schedule = schedules.make_schedule(_config(**{"schedule.name": name}))
    assert type(schedule) is cls
    assert isinstance(schedule, schedules.Schedule)
    assert get_config(name).schedule.name == name  # `configs/default.py:<name>`


def test_config_variants_naming_two_schedules_are_refused():
  """`configs/default.py:fashion,lognormal,infonoise` trained the last one named, in silence."""
  from configs import dna

  for make in (get_config, dna.get_config):
    with pytest.raises(ValueError, match="name two schedules .lognormal and infonoise."):
      make("lognormal,infonoise")
    assert make("lognormal,lognormal").schedule.name == "lognormal"
  assert get_config("fashion,vdmpp").schedule.name == "vdmpp"


def test_schedule_names_clash_with_nothing_else_read_in_their_place():
  """A schedule registered under a word read another way where schedule names go shadows it,
  or is shadowed, silently (probe of docs/schedules.md, 2026-12-07): 'mlp' made
  `configs/default.py:fashion,mlp` a U-Net, 'run' broke `diagnose --schedules=run`, and
  'cosine' replaced the built-in cosine law (its own KS case then passed)."""
  from configs import default, dna
  from infonoise_jax.schedules import adaptive, infonoise

  reserved = {*default.VARIANTS, *dna.VARIANTS, "run"}  # config variants, diagnose's run
  assert not reserved & set(schedules.SCHEDULES), "rename the schedule"
  builtin = {
    "infonoise": infonoise.InfoNoise, "lognormal": fixed.LogNormal, "loguniform": fixed.LogUniform,
    "logitnormal": fixed.LogitNormal, "laplace": fixed.Laplace, "cosine": fixed.Cosine,
    "cdcd": adaptive.CDCD, "vdmpp": adaptive.VDMPP, "iddpm": adaptive.IDDPM, "edm2": adaptive.EDM2,
  }  # fmt: skip
  assert {name: schedules.SCHEDULES.get(name) for name in builtin} == builtin


@pytest.mark.parametrize("name", sorted(schedules.SCHEDULES))
def test_dataclass_defaults_equal_the_default_config(name):
  # A schedule built in code with no arguments is the one `configs/default.py` builds.
  cls = schedules.SCHEDULES[name]
  assert cls() == cls.from_config(get_config())


def test_profile_capability_is_declared_not_guessed():
  # The shipped schedules' capabilities; a schedule registered as docs/schedules.md says (e.g.
  # its fixed `logistic` example) adds to PROFILED or FIXED without failing this test.
  fixed = {"lognormal", "loguniform", "logitnormal", "laplace", "cosine"}
  adaptive = {"infonoise", "cdcd", "vdmpp", "iddpm", "edm2"}
  assert set(schedules.PROFILED) & (fixed | adaptive) == {"infonoise"}
  assert fixed <= set(schedules.FIXED) and not adaptive & set(schedules.FIXED)
  for name, cls in schedules.SCHEDULES.items():
    schedule = schedules.make_schedule(_config(**{"schedule.name": name}))
    assert schedules.has_profile(schedule) == schedules.has_profile(name) == hasattr(cls, "profile")


def test_a_schedule_registered_without_its_config_section_is_named(monkeypatch):
  """docs/schedules.md's step 2 half done (registered, no `c.schedule.<name>` section): the
  command line showed an AttributeError traceback; now one ValueError naming the section."""

  class Mine(fixed.LogNormal):
    config_sections = ("mine",)

  monkeypatch.setitem(schedules.SCHEDULES, "mine", Mine)
  config = _config()
  config.schedule.name = "mine"
  with pytest.raises(ValueError, match=r"reads schedule\.mine, which the config does not define"):
    schedules.make_schedule(config)


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"schedule\.name") as info:
    schedules.make_schedule(_config(**{"schedule.name": "karras"}))
  for name in schedules.SCHEDULES:
    assert name in str(info.value)
