"""Speedup to target: how many fewer training steps a schedule needs to reach a baseline's quality.

docs/method.md section 7: speedup = (steps the baseline needs to reach its own final quality) /
(steps the candidate needs to reach that same quality). Quality is a metric where *lower is
better* (FID, Frechet distance); a curve is a list of evaluations (step, value).

Choices (ours, documented here because every result table depends on them):

* **Target.** The baseline's final quality: the mean of its last `tail` evaluations (tail = 1:
  the last one). Averaging a few tail points keeps one noisy last evaluation from setting it.
* **Noise floor.** Two evaluations of equal quality differ by the metric's noise `tolerance`
  (e.g. the spread of the metric over sample seeds). A curve "reaches" the target at the first
  evaluation with value <= target + tolerance. So the baseline may reach its own final quality
  before its last step (its curve has flattened), and the ratio does not reward a candidate
  for beating the target by less than the noise.
* **Crossing step.** Linear interpolation between the evaluation before and the one at the
  crossing; a curve already at the target at its first evaluation reaches it at that step
  (we cannot know earlier), and the ratio is then a bound, said as such: "at least" when the
  candidate was there at its first evaluation, "at most" when the baseline was, "not measured"
  when both were (common where only a few late steps are scored, e.g. Inception FID).
* **Not reached.** A candidate that never reaches the target has no step count and no ratio:
  `Speedup.ratio` is None and `describe()` says "not reached" with the upper bound
  baseline_steps / candidate's last step. It is never reported as a number.
* Ratios below 1 mean the baseline was faster; they are reported as they are.
* **Per seed and pooled.** Per seed pairs runs by seed id. Pooled takes the mean curve over
  seeds (on the evaluation steps every seed has) and applies the same rule to the means.
"""

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Curve:
  """Evaluations of one run: steps (increasing) and metric values (lower is better)."""

  steps: tuple[float, ...]
  values: tuple[float, ...]

  def __post_init__(self):
    if len(self.steps) != len(self.values) or not self.steps:
      raise ValueError(
        f"a curve needs equal, non-zero numbers of steps and values; got {len(self.steps)} "
        f"steps and {len(self.values)} values"
      )
    if np.any(np.diff(self.steps) <= 0):
      raise ValueError(f"curve steps must increase strictly; got {list(self.steps)}")
    if not np.all(np.isfinite(self.values)):
      raise ValueError(f"curve values must be finite; got {list(self.values)}")

  @classmethod
  def of(cls, steps: Sequence[float], values: Sequence[float]) -> "Curve":
    order = np.argsort(steps)
    return cls(tuple(float(steps[i]) for i in order), tuple(float(values[i]) for i in order))

  def final(self, tail: int = 1) -> float:
    """Mean of the last `tail` evaluations."""
    if tail < 1:
      raise ValueError(f"tail must be >= 1; got {tail}")
    return float(np.mean(self.values[-tail:]))


@dataclasses.dataclass(frozen=True)
class Speedup:
  """Steps to the target for a baseline and a candidate; ratio = baseline / candidate."""

  target: float
  tolerance: float
  baseline_steps: float | None
  candidate_steps: float | None
  candidate_last_step: float
  baseline_at_first: bool = False  # reached at the curve's first evaluation: maybe earlier
  candidate_at_first: bool = False

  @property
  def reached(self) -> bool:
    return self.candidate_steps is not None

  @property
  def ratio(self) -> float | None:
    """baseline_steps / candidate_steps; None when either never reached the target; inf when
    only the candidate was there at step 0 (before training), 1 when both were."""
    if self.baseline_steps is None or self.candidate_steps is None:
      return None
    if self.candidate_steps == 0:
      return 1.0 if self.baseline_steps == 0 else float("inf")
    return self.baseline_steps / self.candidate_steps

  def describe(self) -> str:
    if self.baseline_steps is None:
      return "baseline never within tolerance of its own final value"
    if self.candidate_steps is None:
      bound = self.baseline_steps / self.candidate_last_step
      return f"not reached (< {bound:.2f}x)"
    if self.candidate_steps == 0 and self.baseline_steps > 0:
      return "no steps needed (there at step 0)"
    if self.baseline_at_first and self.candidate_at_first:
      return f"{self.ratio:.2f}x, not measured (both there at their first evaluations)"
    if self.candidate_at_first:
      return f"at least {self.ratio:.2f}x (there at its first evaluation)"
    if self.baseline_at_first:
      return f"at most {self.ratio:.2f}x (the baseline there at its first evaluation)"
    return f"{self.ratio:.2f}x"


def steps_to_reach(curve: Curve, target: float, tolerance: float = 0.0) -> float | None:
  """First step at which the curve is <= target + tolerance (interpolated); None if never."""
  if tolerance < 0:
    raise ValueError(f"tolerance must be >= 0; got {tolerance}")
  level = target + tolerance
  v = np.asarray(curve.values)
  hit = np.nonzero(v <= level)[0]
  if hit.size == 0:
    return None
  i = int(hit[0])
  if i == 0:
    return curve.steps[0]
  s0, s1, v0, v1 = curve.steps[i - 1], curve.steps[i], v[i - 1], v[i]
  t = (v0 - level) / (v0 - v1)  # v0 > level >= v1, so 0 < t <= 1
  return float(s0 + t * (s1 - s0))


def speedup(baseline: Curve, candidate: Curve, tolerance: float = 0.0, tail: int = 1) -> Speedup:
  """Speedup of `candidate` over `baseline` to the baseline's own final quality."""
  target = baseline.final(tail)
  base = steps_to_reach(baseline, target, tolerance)
  cand = steps_to_reach(candidate, target, tolerance)
  return Speedup(
    target=target,
    tolerance=tolerance,
    baseline_steps=base,
    candidate_steps=cand,
    candidate_last_step=candidate.steps[-1],
    # a one-evaluation baseline is its own final value: only the candidate's side can say more
    baseline_at_first=base == baseline.steps[0] and len(baseline.steps) > 1,
    candidate_at_first=cand == candidate.steps[0],
  )


def mean_curve(curves: Sequence[Curve]) -> Curve:
  """Mean over curves at the evaluation steps all of them have."""
  if not curves:
    raise ValueError("mean_curve needs at least one curve")
  common = sorted(set.intersection(*(set(c.steps) for c in curves)))
  if not common:
    raise ValueError("the curves share no evaluation step")
  values = [np.mean([dict(zip(c.steps, c.values, strict=True))[s] for c in curves]) for s in common]
  return Curve.of(common, values)


def per_seed(
  baseline: Mapping[int, Curve], candidate: Mapping[int, Curve], tolerance: float = 0.0, tail=1
) -> dict[int, Speedup]:
  """Speedup per seed, pairing runs by seed id (seeds present in both)."""
  seeds = sorted(set(baseline) & set(candidate))
  if not seeds:
    raise ValueError(
      f"no seed in common: baseline has {sorted(baseline)}, candidate {sorted(candidate)}"
    )
  return {s: speedup(baseline[s], candidate[s], tolerance, tail) for s in seeds}


def pooled(
  baseline: Mapping[int, Curve], candidate: Mapping[int, Curve], tolerance: float = 0.0, tail=1
) -> Speedup:
  """Speedup of the seed-mean curves."""
  return speedup(
    mean_curve(list(baseline.values())), mean_curve(list(candidate.values())), tolerance, tail
  )


def best_arm(curves_by_arm: Mapping[str, Mapping[int, Curve]], tail: int = 1) -> str:
  """The arm whose seed-mean curve ends lowest (the 'best fixed schedule' when given those)."""
  if not curves_by_arm:
    raise ValueError("best_arm needs at least one arm")
  return min(curves_by_arm, key=lambda a: mean_curve(list(curves_by_arm[a].values())).final(tail))
