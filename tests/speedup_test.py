"""Speedup to target on synthetic curves whose crossing steps are known in closed form."""

import numpy as np
import pytest

from infonoise_jax.evaluation import report, speedup

STEPS = np.arange(0, 4001, 100)


def ramp(knee: float, start: float = 10.0, end: float = 1.0) -> speedup.Curve:
  """Linear from `start` at step 0 down to `end` at `knee`, flat after: the crossing of any
  level in (end, start) is exact under linear interpolation."""
  v = np.where(STEPS < knee, start + (end - start) * STEPS / knee, end)
  return speedup.Curve.of(STEPS, v)


def test_time_compressed_candidate_is_twice_as_fast():
  base, cand = ramp(2000), ramp(1000)
  s = speedup.speedup(base, cand)
  assert s.target == 1.0
  assert s.baseline_steps == pytest.approx(2000)
  assert s.candidate_steps == pytest.approx(1000)
  assert s.ratio == pytest.approx(2.0)
  assert s.describe() == "2.00x"


def test_baseline_better_gives_ratio_below_one():
  s = speedup.speedup(ramp(1000), ramp(3000))
  assert s.ratio == pytest.approx(1 / 3)


def test_crossing_is_interpolated_between_evaluations():
  # level 5.5 on a ramp 10 -> 1 over 1000 steps is crossed at step 500 (between evals 400, 600)
  c = speedup.Curve.of([0, 400, 600, 1000], [10.0, 6.4, 4.6, 1.0])
  assert speedup.steps_to_reach(c, 5.5) == pytest.approx(500.0)
  assert speedup.steps_to_reach(c, 20.0) == 0.0  # already there at the first evaluation
  assert speedup.steps_to_reach(c, 0.5) is None


def test_a_crossing_at_a_curves_first_evaluation_is_reported_as_a_bound():
  """Scored from step 1000 on (a few late checkpoints), a curve already at the target at its
  first evaluation may have been there earlier: the candidate's side makes the ratio a lower
  bound, the baseline's an upper bound, both sides no measurement; the ratio itself is still
  the interpolation rule's (3000 / 1000 and 1000 / 2000 here)."""
  late = np.arange(1000, 4001, 1000)
  base = speedup.Curve.of(late, [4.0, 3.0, 2.0, 2.0])  # at its final 2.0 from 3000
  early = speedup.Curve.of(late, [1.9, 1.8, 1.7, 1.6])  # below 2.0 already at 1000
  s = speedup.speedup(base, early)
  assert (s.ratio, s.baseline_at_first, s.candidate_at_first) == (3.0, False, True)
  assert s.describe() == "at least 3.00x (there at its first evaluation)"
  flat = speedup.Curve.of(late, [2.0, 2.0, 2.0, 2.0])  # at its final value from its first step
  s = speedup.speedup(flat, speedup.Curve.of(late, [5.0, 2.0, 1.0, 1.0]))
  assert (
    s.ratio == 0.5 and s.describe() == "at most 0.50x (the baseline there at its first evaluation)"
  )
  s = speedup.speedup(flat, early)
  assert s.describe() == "1.00x, not measured (both there at their first evaluations)"
  # from step 0 on, as the ramps above: an interpolated crossing is a measurement
  assert speedup.speedup(ramp(2000), ramp(1000)).describe() == "2.00x"
  # a candidate at the target before training (evaluated at step 0): no division by zero
  s = speedup.speedup(ramp(2000), speedup.Curve.of(STEPS, np.ones(len(STEPS))))
  assert s.ratio == np.inf and s.describe() == "no steps needed (there at step 0)"
  flat = speedup.Curve.of(STEPS, np.ones(len(STEPS)))
  both = speedup.speedup(flat, flat)
  assert both.ratio == 1.0 and both.describe().endswith(
    "not measured (both there at their first evaluations)"
  )
  assert report.speedup_plot({"c": (s, {0: s, 1: both})}, "b", "t").ndim == 3  # inf: not drawn


def test_not_reached_is_reported_not_a_number():
  base = ramp(2000, end=1.0)
  cand = ramp(1000, end=1.5)  # plateaus above the baseline's final value
  s = speedup.speedup(base, cand)
  assert not s.reached and s.ratio is None
  assert s.describe() == "not reached (< 0.50x)"  # 2000 / last step 4000


def test_noise_floor_counts_a_flattened_baseline_as_arrived():
  # baseline flattens at 1.0 by step 1000, then wanders within +-0.05 and ends at 0.96
  rng = np.random.default_rng(0)
  v = np.asarray(ramp(1000).values).copy()
  v[STEPS > 1000] += rng.uniform(-0.05, 0.05, np.sum(STEPS > 1000))
  v[-1] = 0.96
  base = speedup.Curve.of(STEPS, v)
  cand = ramp(500)
  strict = speedup.speedup(base, cand, tolerance=0.0)
  assert strict.candidate_steps is None  # candidate's 1.0 never beats a lucky 0.96
  floor = speedup.speedup(base, cand, tolerance=0.05)
  # level 1.01: baseline crosses at 1000 * (10 - 1.01) / 9, candidate at half that
  assert floor.baseline_steps == pytest.approx(1000 * 8.99 / 9)
  assert floor.ratio == pytest.approx(2.0)


def test_tail_mean_sets_the_target():
  c = speedup.Curve.of([1, 2, 3, 4], [4.0, 3.0, 2.0, 1.0])
  assert c.final(1) == 1.0 and c.final(2) == 1.5
  with pytest.raises(ValueError, match="tail"):
    c.final(0)


def test_per_seed_and_pooled():
  base = {0: ramp(2000), 1: ramp(3000)}
  cand = {0: ramp(1000), 1: ramp(1000), 7: ramp(10)}  # seed 7 has no partner
  per = speedup.per_seed(base, cand)
  assert sorted(per) == [0, 1]
  assert per[0].ratio == pytest.approx(2.0) and per[1].ratio == pytest.approx(3.0)
  # pooled: mean of the two baseline ramps reaches 1.0 when both have, at 3000; the
  # candidate mean (three ramps, one reaching 1.0 at step 10 -> at the first eval > 0
  # every curve is on its ramp or flat) reaches 1.0 at 1000
  p = speedup.pooled(base, cand)
  assert p.baseline_steps == pytest.approx(3000)
  assert p.candidate_steps == pytest.approx(1000)
  assert p.ratio == pytest.approx(3.0)


def test_mean_curve_uses_common_steps_only():
  a = speedup.Curve.of([0, 100, 200], [3.0, 2.0, 1.0])
  b = speedup.Curve.of([0, 200], [5.0, 3.0])
  m = speedup.mean_curve([a, b])
  assert m.steps == (0.0, 200.0) and m.values == (4.0, 2.0)


def test_best_arm_is_lowest_final_mean():
  arms = {"lognormal": {0: ramp(1000, end=1.2)}, "loguniform": {0: ramp(3000, end=1.1)}}
  assert speedup.best_arm(arms) == "loguniform"


def test_bad_curves_are_rejected():
  with pytest.raises(ValueError, match="increase"):
    speedup.Curve((0.0, 0.0), (1.0, 2.0))
  with pytest.raises(ValueError, match="finite"):
    speedup.Curve((0.0, 1.0), (1.0, float("nan")))
  with pytest.raises(ValueError, match="no seed in common"):
    speedup.per_seed({0: ramp(10)}, {1: ramp(10)})
