"""The comparison report: metric noise, tables of incomplete runs, the inference-grid table."""

import math

import numpy as np
import pytest

from infonoise_jax.evaluation import report, speedup


def _eval(arm, seed, step, fd, resample=False):
  return {
    "kind": "eval",
    "data": "d",
    "arm": arm,
    "seed": seed,
    "step": step,
    "fd": fd,
    "resample": resample,
  }


def test_metric_noise_is_the_mean_resample_gap_and_nan_when_unmeasured():
  recs = [
    _eval("a", 0, 10, 1.0),
    _eval("a", 0, 10, 1.5, True),
    _eval("a", 1, 10, 2.0),
    _eval("a", 1, 10, 1.9, True),
    _eval("b", 0, 10, 3.0),
  ]
  assert math.isclose(report.metric_noise(recs, "d"), (0.5 + 0.1) / 2)
  assert math.isnan(report.metric_noise([r for r in recs if not r["resample"]], "d"))


def test_metric_noise_of_one_shared_draw_leaves_out_what_moves_every_run_alike():
  """With one draw for every evaluation (eval_draw fixed) a draw's shared effect cancels in
  the report's comparisons: the noise is the gaps' spread about their mean, scaled to one
  gap's size. Simulated: a shared offset of 2 plus independent unit-scale noise per model."""
  rng = np.random.default_rng(0)
  n, sigma = 4000, 0.1
  e = rng.normal(0, sigma, (2, n))  # each model's own error under draws D and D'
  recs = []
  for k in range(n):
    recs += [_eval("a", k, 10, 5.0 + 2.0 + e[0, k]), _eval("a", k, 10, 5.0 + e[1, k], True)]
  per_step = report.metric_noise(recs, "d")
  assert math.isclose(per_step, 2.0, rel_tol=0.01)  # the old rule: the shared offset too
  for r in recs:
    r["eval_draw"] = "fixed"
  want = 2 * sigma / math.sqrt(math.pi)  # E|e_A - e_B| for two models' independent errors
  assert math.isclose(report.metric_noise(recs, "d"), want, rel_tol=0.05)
  assert math.isclose(report.metric_noise(recs[:2], "d"), 2.0 + e[0, 0] - e[1, 0])  # one run


def test_runs_that_are_one_model_up_to_rounding_are_a_tie_not_worse():
  """Two arms that are the same model (an adaptive arm in its warm-up beside its base law)
  differ in the 8th digit under a shared draw, so the spread of their gaps is ~1e-8 and such a
  tolerance called one of them "worse" and "not reached": the noise is floored at 1e-6 of the
  metric's median, and the verdict is a tie at 1.00x."""
  recs = []
  for arm, eps in (("base", 0.0), ("same", 2e-7)):
    for step, v in ((10, 20.0), (20, 12.2772896)):
      recs.append({**_eval(arm, 0, step, v + eps), "eval_draw": "fixed"})
    recs.append({**_eval(arm, 0, 20, 12.3 + eps, True), "eval_draw": "fixed"})
  noise = report.metric_noise(recs, "d")
  assert math.isclose(noise, 1e-6 * np.median([20.0, 12.2772896, 20.0, 12.2772898]))
  curves = report.curves_by_arm(recs, "d")
  row = report.speedup_lines(curves, "base", ["base", "same"], noise)[-1]
  assert row.startswith("| same | 1.00x |") and row.endswith("(tie) |")


def test_table_shows_every_evaluated_step_and_dashes_where_an_arm_has_none():
  """Arms evaluated at different steps (a run scored only at its end beside one scored along
  the way) keep all their columns; the range is at each arm's own last step."""
  recs = [
    _eval("curve", 0, 10, 4.0),
    _eval("curve", 1, 10, 6.0),
    _eval("curve", 0, 20, 2.0),
    _eval("curve", 1, 20, 3.0),
    _eval("end", 0, 20, 1.0),
    _eval("end", 1, 20, 1.5),
    _eval("short", 0, 10, 7.0),
    _eval("cut", 0, 10, 4.0),
    _eval("cut", 1, 10, 6.0),
    _eval("cut", 0, 20, 2.0),  # seed 1 never reached step 20
  ]
  arms = ["curve", "end", "short", "cut", "absent"]
  text = report.table(report.curves_by_arm(recs, "d"), arms)
  assert text.splitlines() == [
    "| arm | seeds | 10 | 20 |",
    "|---|---|---|---|",
    "| curve | 2 | 5 | 2.5 (2..3) |",
    "| end | 2 | - | 1.25 (1..1.5) |",
    "| short | 1 | 7 (7..7) | - |",
    "| cut | 2 | 5 | 2 (2..2; 1 of 2 seeds) |",
  ]


def test_grid_table_averages_seeds_per_solver_grid_and_nfe():
  recs = [
    {
      "kind": "grid",
      "data": "d",
      "arm": "i",
      "solver": "heun",
      "grid": "karras",
      "nfe": n,
      "fd": fd,
      "seed": s,
    }
    for n, fd, s in ((11, 2.0, 0), (11, 4.0, 1), (35, 1.0, 0))
  ]
  text = report.grid_table(recs, "d")
  assert "| i | heun | karras | 3 (2..4) | 1 (1..1) |" in text
  assert report.grid_table(recs, "other") == ""


def test_inception_section_from_fid_of_samples_lines():
  """fid_of_samples.py lines of the harness's saved samples become a table with the floor at
  the same count, and the speedup to the baseline's final FID says 'not reached' when the
  other arm never gets there."""
  fid_lines = [
    {"kind": "floor", "key": "floor", "num": 100, "fid": 1.5},
    {"kind": "floor", "key": "floor", "num": 7, "fid": 9.0},  # another count: not shown
    *[
      {"kind": "fid", "samples": f"final_d_{arm}.npz", "key": "k", "arm": arm}
      | {"seed": seed, "step": step, "num": 100, "fid": fid}
      for arm, seed, step, fid in (
        ("ln", 0, 10, 9.0),
        ("ln", 0, 20, 8.0),
        ("ln", 1, 10, 9.5),
        ("ln", 1, 20, 8.5),
        ("info", 0, 10, 9.2),
        ("info", 0, 20, 8.9),
        ("info", 1, 10, 9.1),
        ("info", 1, 20, 9.0),
      )
    ],
    {"kind": "fid", "samples": "other.npz", "arm": "ln", "seed": 0, "step": 5, "num": 3},
    # the grid study's samples of the info runs: one setting, scored as an arm of its own
    {"kind": "fid", "samples": "grid_d_info.npz", "key": "k", "arm": "info@heun-karras-4"}
    | {"seed": 0, "step": 20, "num": 100, "fid": 7.5},
  ]
  recs = report.inception_records(fid_lines)
  assert {r["data"] for r in recs if r["kind"] == "eval"} == {"d"}
  text = "\n".join(report.inception_section(recs, "d", ["ln", "info"], "ln"))
  assert "Inception FID (100 samples per model)" in text
  assert "| ln | 2 | 9.25 | 8.25 (8..8.5) |" in text
  assert "| info | 2 | 9.15 | 8.95 (8.9..9) |" in text
  assert "Floor (real images, same count): 1.5 at 100." in text
  assert "| info | not reached" in text
  assert report.inception_section(recs, "other", ["ln"], "ln") == []
  grid_rows = [l for l in text.splitlines() if l.startswith("| info@heun-karras-4 |")]
  assert len(grid_rows) == 1 and "7.5" in grid_rows[0]  # a table of its own, after the arms'
  assert text.index("| info@heun-karras-4 |") > text.index("| info | not reached")


def test_inception_draw_noise_from_the_halves_is_the_tolerance():
  """Sets scored with their two halves give the draw noise |h1 - h2| / sqrt(2), averaged over
  the sets: the speedup's tolerance and the flattening's noise (unmeasured without halves)."""

  def line(arm, step, value, halves=None):
    rec = {"kind": "fid", "samples": f"final_d_{arm}.npz", "key": "k", "arm": arm, "seed": 0}
    rec |= {"step": step, "num": 100, "fid": value}
    return rec | ({"fid_halves": halves} if halves else {})

  plain = [line("ln", 10, 3.0), line("ln", 20, 2.05), line("ln", 30, 2.0), line("in", 10, 2.1)]
  text = "\n".join(
    report.inception_section(report.inception_records(plain), "d", ["ln", "in"], "ln")
  )
  assert "| in | not reached" in text and "none reads as flat" in text
  noisy = [line(a, st, v, [v + 0.1, v - 0.1 + 0.2 * (a == "in")]) for a, st, v in
           (("ln", 10, 3.0), ("ln", 20, 2.05), ("ln", 30, 2.0), ("in", 10, 2.1))]  # fmt: skip
  recs = report.inception_records(noisy)
  noise = np.mean([0.2, 0.2, 0.2, 0.0]) / np.sqrt(2)
  assert report.inception_noise(recs, "d") == pytest.approx(noise)
  assert report.inception_noise(report.inception_records(plain), "d") is None
  text = "\n".join(report.inception_section(recs, "d", ["ln", "in"], "ln"))
  assert f"two halves: {noise:.4g}" in text
  # ln comes within 0.106 of 2.0 at 19.4 (crossing between scored steps), in at 10, its only
  # evaluation (it may have been there earlier): at least 1.94x;
  # ln's last change (0.05) reads as flat
  assert "| in | at least 1.94x (there at its first evaluation) |" in text
  assert "| ln | 20-30 |" in text and "flat: within the" in text


def test_inception_curves_never_mix_sample_counts():
  """An arm scored at two counts (fid_of_samples --num) is shown at its largest: the smaller
  count's values (biased higher) are named, not mixed into the curve or its draw noise."""

  def line(arm, num, value, halves):
    name = f"grid_d_{arm.split('@')[0]}.npz" if "@" in arm else f"final_d_{arm}.npz"
    rec = {"kind": "fid", "samples": name, "key": "k", "arm": arm, "seed": 0}
    return rec | {"step": 10, "num": num, "fid": value, "fid_halves": halves}

  lines = [line("ln", 100, 2.0, [2.1, 1.9]), line("ln", 20, 5.0, [6.0, 3.0])]
  lines.append(line("ln@heun-karras-6", 20, 4.0, [4.0, 4.0]))  # a grid setting: its own count
  recs = report.inception_records(lines)
  text = "\n".join(report.inception_section(recs, "d", ["ln"], "ln"))
  assert "| ln | 1 | 2 (2..2) |" in text and "5 (5..5)" not in text
  assert "Also scored at other sample counts (not shown): ln at 20." in text
  assert "| ln@heun-karras-6 | 1 | 4 (4..4) |" in text  # shown at its only count
  # the draw noise of ln's shown set only: |2.1 - 1.9| / sqrt(2)
  assert f"{0.2 / np.sqrt(2):.4g} (within it: flat)" in text


def test_a_zero_floor_is_reported_not_taken_for_none(tmp_path):
  """A set no larger than the sample count scores 0 against itself: still a floor."""
  recs = [{**_eval("lognormal", 0, s, 1.0 / s), "config": {"train": {"batch_size": 8},
           "schedule": {"name": "lognormal"}}} for s in (2, 4)]  # fmt: skip
  recs.append({"kind": "floor", "data": "d", "fd": 0.0})
  text = report.write_report(str(tmp_path), recs, ["lognormal"])
  assert "Floor (real data, same sample count): 0." in text and "No floor" not in text
  # fewer examples than each evaluation draws: the floor is the whole set against itself,
  # which bounds nothing, and the report says so instead of "same sample count"
  recs = [{**r, "num_samples": 64} for r in recs[:-1]]
  recs.append({"kind": "floor", "data": "d", "fd": 0.0, "num_samples": 20})
  text = report.write_report(str(tmp_path), recs, ["lognormal"])
  assert "Floor (real data): 0, of all 20 examples against themselves" in text
  assert "fewer than the 64 samples" in text and "same sample count" not in text


def test_inception_scores_get_their_own_curve_plot(tmp_path):
  """write_report draws inception_<data>.png from fid_of_samples.py lines of the arms' saved
  samples (none without them); the floor is the one of binarized real images when the arm's
  data was binarized, at the same sample count."""
  from PIL import Image

  cfg = {"train": {"batch_size": 8}, "schedule": {"name": "lognormal"}, "data": {"binarize": True}}
  recs = [{**_eval("ln", seed, s, 1.0 / s), "config": cfg} for s in (2, 4) for seed in (0, 1)]
  report.write_report(str(tmp_path), recs, ["ln"])
  assert not (tmp_path / "inception_d.png").exists()
  fid_lines = [
    {"kind": "floor", "key": "floor", "num": 100, "fid": 1.5, "binarize": False},
    {"kind": "floor", "key": "floor", "num": 100, "fid": 0.9, "binarize": True},
  ] + [
    {"kind": "fid", "samples": "final_d_ln.npz", "key": "k", "arm": "ln"}
    | {"seed": seed, "step": s, "num": 100, "fid": 9.0 / s}
    for s in (2, 4)
    for seed in (0, 1)
  ]
  text = report.write_report(str(tmp_path), recs, ["ln"], fid_lines=fid_lines)
  assert "Inception FID (100 samples per model)" in text
  assert "Floor (real images, same count): 0.9 at 100." in text
  with Image.open(tmp_path / "inception_d.png") as img:
    assert img.size[0] > 300 and img.size[1] > 200
  recs = [r | {"config": cfg | {"data": {"binarize": False}}} for r in recs]
  text = report.write_report(str(tmp_path), recs, ["ln"], fid_lines=fid_lines)
  assert "Floor (real images, same count): 1.5 at 100." in text


def test_speedup_table_says_when_an_arm_reached_the_target_but_ended_worse():
  """The first crossing counts for the speedup, so an arm that touches the baseline's final
  value early and then degrades gets a ratio; the table also gives both final seed means and
  calls the arm worse when the gap exceeds the tolerance (a tie within it)."""
  recs = []
  for seed in (0, 1):
    for step, base, dip, flat in ((10, 5.0, 2.0, 4.0), (20, 3.0, 4.0, 3.05), (30, 2.0, 3.0, 2.05)):
      recs += [_eval("base", seed, step, base), _eval("dip", seed, step, dip)]
      recs.append(_eval("flat", seed, step, flat))
  curves = {a: report.curves_by_arm(recs, "d")[a] for a in ("base", "dip", "flat")}
  lines = report.speedup_lines(curves, "base", ["base", "dip", "flat"], tolerance=0.1)
  assert lines[2] == "| arm | pooled | per seed | final (seed mean) vs `base`'s |"
  dip = next(l for l in lines if l.startswith("| dip |"))
  assert "2.90x" in dip and dip.endswith("| 3 vs 2 (worse) |")
  flat = next(l for l in lines if l.startswith("| flat |"))
  assert flat.endswith("| 2.05 vs 2 (tie) |")


def test_speedup_tail_sets_the_target_to_the_mean_of_the_last_evaluations():
  """tail = 2: the target is the mean of the baseline's last two values (7.2 here, not 7.4):
  the baseline reaches it at step 2.8 and the candidate at 2.0 (interpolated by hand), 1.40x;
  with tail 1 the target 7.4 is reached at 2.6 and 1 + 1.6 / 1.8 = 1.889, 1.38x."""
  recs = []
  for step, base, cand in ((1, 10.0, 9.0), (2, 8.0, 7.2), (3, 7.0, 7.0), (4, 7.4, 7.0)):
    recs += [_eval("base", 0, step, base), _eval("cand", 0, step, cand)]
  curves = {a: report.curves_by_arm(recs, "d")[a] for a in ("base", "cand")}
  two = report.speedup_lines(curves, "base", ["base", "cand"], tolerance=0.0, tail=2)
  assert "mean of the last 2 evaluations" in two[0]
  assert next(l for l in two if l.startswith("| cand |")).startswith("| cand | 1.40x | 0: 1.40x")
  one = report.speedup_lines(curves, "base", ["base", "cand"], tolerance=0.0)
  assert next(l for l in one if l.startswith("| cand |")).startswith("| cand | 1.38x |")
  assert "7 vs 7.2 (better)" in next(l for l in two if l.startswith("| cand |"))


def test_speedup_table_names_runs_cut_short_and_keeps_their_steps_apart():
  """Seed 2 of `cand` ends at step 20 (a cut run): its cell says so, the pooled cell says the
  seed-mean curve stops at 20 (mean_curve keeps the steps every seed has), and the final is
  the mean of the two runs at step 30, (1.0 + 3.0) / 2 = 2, "2 of 3 seeds", not a mean that
  mixes seed 2's step-20 value 9 in (13 / 3). The baseline falls to its final 6 at step 30."""
  recs = []
  for seed in (0, 1, 2):
    for step in (10, 20, 30):
      recs.append(_eval("base", seed, step, 12.0 - step / 5))
      if not (seed == 2 and step == 30):
        recs.append(_eval("cand", seed, step, 9.0 if step < 30 else 1.0 + 2 * seed))
  curves = {a: report.curves_by_arm(recs, "d")[a] for a in ("base", "cand")}
  row = next(l for l in report.speedup_lines(curves, "base", ["base", "cand"], 0.0) if "cand" in l)
  assert "2: not reached (< 1.50x) (run ends at 20)" in row
  # seed 0 crosses 6 between 9 at step 20 and 1 at 30: 20 + 10 * 3 / 8 = 23.75, 30 / 23.75
  assert "0: 1.26x, 1: 1.20x, 2:" in row and "(run ends" not in row.split("2:")[0]
  assert "(seed means over the steps all seeds have: `cand` to 20)" in row
  assert row.endswith("| 2 (2 of 3 seeds) vs 6 (better) |")


def test_arms_run_on_other_seeds_get_a_pooled_speedup_and_no_per_seed_pairs():
  """Runs gathered from several calls into one report can carry other seeds per arm (here the
  baseline seed 2, the candidate seed 1): the report pairs nothing by seed and says so, and
  still gives the pooled speedup of the seed-mean curves (baseline reaches its final 6 at step
  30, the candidate at 20 + 10 * 1 / 4 = 22.5: 30 / 22.5 = 1.33x), instead of stopping on the
  per-seed pairing."""
  recs = []
  for step, base, cand in ((10, 10.0, 9.0), (20, 8.0, 7.0), (30, 6.0, 3.0)):
    recs += [_eval("base", 2, step, base), _eval("cand", 1, step, cand)]
  curves = {a: report.curves_by_arm(recs, "d")[a] for a in ("base", "cand")}
  row = report.speedup_lines(curves, "base", ["base", "cand"], 0.0)[-1]
  assert row.startswith(
    "| cand | 1.33x (seed means of seeds [1] against `base`'s [2]) | no seed in common (seeds "
    "[1], `base` [2]) |"
  )
  found = report.speedups(curves, "base", ["base", "cand"], 0.0)
  assert found["cand"][1] == {} and report.speedup_plot(found, "base", "d").ndim == 3


def test_final_values_of_arms_trained_to_different_steps_are_compared_where_both_ran():
  """`long` trains to step 40 where `base` stopped at 30 (a time limit): the finals are set
  side by side at step 30, 4 vs 6 (better), not long's step-40 value 1 against base's 6; the
  cell names the step and which arm ran on. Either order of the arms; equal ends as before."""
  recs = []
  for step, base, long in ((10, 10.0, 10.0), (20, 8.0, 8.0), (30, 6.0, 4.0), (40, None, 1.0)):
    recs += [_eval("long", 0, step, long)] + ([_eval("base", 0, step, base)] if base else [])
  curves = {a: report.curves_by_arm(recs, "d")[a] for a in ("base", "long")}
  row = report.speedup_lines(curves, "base", ["base", "long"], 0.0)[-1]
  assert row.endswith("| 4 vs 6 (better, at step 30; `long` runs to 40) |")
  row = report.speedup_lines(curves, "long", ["long", "base"], 0.0)[-1]
  assert row.endswith("| 6 vs 4 (worse, at step 30; `long` runs to 40) |")
  same = {a: {0: speedup.Curve(c[0].steps[:3], c[0].values[:3])} for a, c in curves.items()}
  assert report.speedup_lines(same, "base", ["base", "long"], 0.0)[-1].endswith("4 vs 6 (better) |")


def test_a_baseline_alone_gets_no_speedup_table_or_plot(tmp_path):
  """One fixed arm is its own baseline: nothing to compare, so neither the metric's nor the
  Inception FID's speedup table (an empty one read as a result) nor the speedup plot; a
  second arm brings both."""
  cfg = {"train": {"batch_size": 8}, "schedule": {"name": "lognormal"}}
  recs = [{**_eval("ln", seed, s, 1.0 / s), "config": cfg} for s in (2, 4) for seed in (0, 1)]
  fid_lines = [
    {"kind": "fid", "samples": "final_d_ln.npz", "key": "k", "arm": "ln"}
    | {"seed": seed, "step": s, "num": 100, "fid": 9.0 / s}
    for s in (2, 4)
    for seed in (0, 1)
  ]
  (tmp_path / "speedup_d.png").write_bytes(b"an earlier report's")  # not left as if current
  text = report.write_report(str(tmp_path), recs, ["ln"], fid_lines=fid_lines)
  assert "Inception FID (100 samples per model)" in text and "Speedup" not in text
  assert not (tmp_path / "speedup_d.png").exists()
  other = {**cfg, "schedule": {"name": "infonoise"}}
  recs += [{**_eval("in", seed, s, 0.5 / s), "config": other} for s in (2, 4) for seed in (0, 1)]
  fid_lines += [r | {"arm": "in", "samples": "final_d_in.npz"} for r in fid_lines]
  text = report.write_report(str(tmp_path), recs, ["ln", "in"], fid_lines=fid_lines)
  assert text.count("Speedup to the final value of `ln`") == 2
  assert (tmp_path / "speedup_d.png").exists()


def test_seed_values_keep_every_step_any_seed_has():
  """The table and the curves plot average these: seed 1 cut after step 2 leaves one value at
  step 3 (plotted with an open marker), none dropped; steps come out in order."""
  recs = [_eval("a", 0, s, float(s)) for s in (3, 1, 2)] + [_eval("a", 1, s, 10.0) for s in (1, 2)]
  at = report.seed_values(report.curves_by_arm(recs, "d")["a"])
  assert at == {1: [1.0, 10.0], 2: [2.0, 10.0], 3: [3.0]}


def test_end_of_budget_reading_from_the_slope_the_noise_and_the_seed_spread(tmp_path):
  """Seed offsets 0 / 0.1 / 0.2 (spread 0.2) on lines of known slope per 1,000 steps,
  evaluated every 500 steps (so a change per interval is half the slope): -1.0 per 1,000 is
  -0.5 per interval, "still improving"; -0.2 per 1,000 (-0.1, inside the spread, outside the
  noise 0.05) "slowing"; -0.06 per 1,000 (-0.03) "flat"; +1.0 "getting worse". The fit uses
  only the steps every seed has (seed 2 of `cut` stops early) and the last 3 of them; an arm
  with 2 evaluations is named, not fitted."""
  slopes = {"fast": -1.0, "slow": -0.2, "flat": -0.06, "worse": 1.0, "cut": -1.0}
  recs = []
  for arm, per_1000 in slopes.items():
    for seed, offset in enumerate((0.0, 0.1, 0.2)):
      for step in range(500, 3001, 500):
        if arm == "cut" and seed == 2 and step > 2000:
          continue
        # a kink before the fitted span: only the last three evaluations set the slope
        early = 5.0 if step == 500 else 0.0
        recs.append(_eval(arm, seed, step, 10.0 + early + offset + per_1000 * step / 1000))
  recs += [_eval("short", seed, s, 1.0) for s in (500, 1000) for seed in (0, 1)]
  curves = report.curves_by_arm(recs, "d")
  lines = report.flattening_lines(curves, [*slopes, "short", "absent"], noise=0.05)
  assert "metric noise: 0.05 (within it: flat)" in lines[0]
  rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines[4:]}
  assert set(rows) == {*slopes, "short"}
  assert rows["fast"] == ["2000-3000", "-0.5", "-1", "0.2", "3 of 3", "still improving |"]
  slowing = "slowing: within the seed spread, falling |"
  assert rows["slow"][1:] == ["-0.1", "-0.2", "0.2", "3 of 3", slowing]
  assert rows["flat"][1:] == ["-0.03", "-0.06", "0.2", "3 of 3", "flat: within the metric noise |"]
  assert rows["worse"][-2:] == ["0 of 3", "getting worse |"]
  assert rows["cut"][:2] == ["1000-2000", "-0.5"]  # seed 2's last step is 2000
  assert rows["short"] == ["2 evaluations", "-", "-", "-", "-", "too few to fit |"]
  with pytest.raises(ValueError, match="at least 2 evaluations"):
    report.flattening_lines(curves, ["fast"], noise=0.05, window=1)
  unmeasured = report.flattening_lines(curves, ["flat"], noise=None)  # no resampled evaluation
  assert "metric noise: not measured, so none reads as flat" in unmeasured[0]
  assert unmeasured[-1].endswith("| slowing: within the seed spread, falling |")
  # the report carries it for the metric and, over the last interval only, for Inception FID
  cfg = {"train": {"batch_size": 8}, "schedule": {"name": "lognormal"}}
  fid_lines = [
    {"kind": "fid", "samples": "final_d_fast.npz", "key": "k", "arm": "fast"}
    | {"seed": seed, "step": s, "num": 100, "fid": 9.0 - s / 1000 - seed / 10}
    for s in (1000, 2000, 3000)
    for seed in (0, 1)
  ]
  text = report.write_report(
    str(tmp_path), [r | {"config": cfg} for r in recs], ["fast"], fid_lines=fid_lines
  )
  assert text.count("End of budget") == 2
  assert "fitted through the last 2 evaluations" in text
  assert "| fast | 2000-3000 | -1 | -1 | 0.1 | 2 of 2 | still improving |" in text


@pytest.mark.parametrize(
  "limits, majors, minors",
  [
    ((7.2, 9.6), [], ["8", "9"]),  # less than a decade: no decade tick, every minor labelled
    ((0.4, 30.0), ["1", "10"], ["0.5", "2", "5", "20"]),  # up to two decades: 2 and 5
    ((0.02, 60.0), ["0.1", "1", "10"], []),  # more: decades only
  ],
)
def test_log_axes_are_labelled_with_plain_numbers(limits, majors, minors):
  """Against the numbers themselves: matplotlib's default writes 8x10^0 and 10^-1."""
  from matplotlib.figure import Figure

  ax = Figure().add_subplot()
  ax.plot([0, 1], limits)
  ax.set_yscale("log")
  ax.set_ylim(*limits)
  report.plain_log_ticks(ax.yaxis)

  def labels(minor: bool) -> list[str]:
    fmt = ax.yaxis.get_minor_formatter() if minor else ax.yaxis.get_major_formatter()
    locs = ax.yaxis.get_minorticklocs() if minor else ax.yaxis.get_majorticklocs()
    inside = [v for v in locs if limits[0] <= v <= limits[1]]
    return [t for t in (fmt(v, i) for i, v in enumerate(inside)) if t]

  assert labels(minor=False) == majors
  shown = labels(minor=True)
  assert all(m in shown for m in minors) and not any("e" in t or "^" in t for t in shown)
  if not minors:
    assert shown == []  # over two decades the minor ticks would crowd the axis
  if limits == (0.4, 30.0):
    assert "3" not in shown and "7" not in shown


def test_the_other_metrics_get_their_own_speedups_with_their_own_noise(tmp_path):
  """Sequence evaluations carry several metrics besides the primary one: each lower-is-better
  one gets a speedup row (the same rule as the primary table) with its own resample noise as
  the tolerance; families sort by size (k = 3 before k = 10), and the signed gc_mean_diff and
  bookkeeping numbers (train_loss) are left out. Here on kmer_js_3 the baseline reaches its
  final 0.2 (+ noise 0.02 = 0.22) at step 20 + 10 * (0.4 - 0.22) / (0.4 - 0.2) = 29, the
  candidate at 10 + 10 * (0.3 - 0.22) / (0.3 - 0.1) = 14: 29 / 14 = 2.07x."""
  cfg = {"train": {"batch_size": 8}}
  recs = []
  for step, b, c in ((10, 0.6, 0.3), (20, 0.4, 0.1), (30, 0.2, 0.1)):
    for arm, v in (("ln", b), ("in", c)):
      recs.append(
        {**_eval(arm, 0, step, 1.0), "metric": "fd", "config": cfg}
        | {"kmer_js_3": v, "kmer_js_10": v, "gc_mean_diff": -v, "train_loss": v}
      )
  for arm, v in (("ln", 0.2), ("in", 0.1)):  # one resampled evaluation each: |d| = 0.02
    recs.append({**_eval(arm, 0, 30, 1.0, resample=True), "kmer_js_3": v + 0.02})
  assert report.other_metrics(recs, "d", "fd") == ["kmer_js_3", "kmer_js_10"]
  # a metric some evaluation could not compute (nan) gets no row rather than stopping the report
  with_gc = [{**r, "gc_w1": 0.1} for r in recs]
  assert report.other_metrics(with_gc, "d", "fd") == ["kmer_js_3", "kmer_js_10", "gc_w1"]
  with_gc[1]["gc_w1"] = float("nan")
  assert report.other_metrics(with_gc, "d", "fd") == ["kmer_js_3", "kmer_js_10"]
  lines = report.other_metric_speedup_lines(recs, "d", "fd", "ln", ["ln", "in"])
  assert lines[0].startswith("The other metrics: speedup to the final value of `ln`")
  assert lines[4] == "| in | `kmer_js_3` | 0.02 | 2.07x | 0: 2.07x |"
  # no resample of kmer_js_10: tolerance 0, the baseline at 0.2 at step 30, the candidate at
  # 10 + 10 * 0.1 / 0.2 = 15: 2.00x
  assert lines[5] == "| in | `kmer_js_10` | 0 (noise not measured) | 2.00x | 0: 2.00x |"
  assert report.other_metric_speedup_lines(recs, "d", "fd", "nobody", ["in"]) == []
  plain = [{k: v for k, v in r.items() if not k.startswith("kmer")} for r in recs]
  assert report.other_metric_speedup_lines(plain, "d", "fd", "ln", ["ln", "in"]) == []
  # in the written report, after the primary speedup table, with the fixed schedules' baseline
  recs = [r | {"config": {**cfg, "schedule": {"name": r["arm"].replace("ln", "lognormal")}}}
          for r in recs]  # fmt: skip
  text = report.write_report(str(tmp_path), recs, ["ln", "in"])
  assert text.index("Speedup to the final value of `ln`") < text.index("The other metrics")


def test_a_cut_off_last_line_is_left_out_and_the_next_record_starts_a_new_line(tmp_path, capsys):
  """A hard kill or a full disk mid-write leaves a last line without its newline: reading
  leaves it out with a warning (its evaluation is then done again), and the next append
  starts on a line of its own instead of gluing onto it. A damaged line elsewhere is an
  error naming the file and line."""
  path = str(tmp_path / "results.jsonl")
  report.append_record(path, {"step": 1})
  with open(path, "a") as f:
    f.write('{"step": 2, "fd": 1.')  # cut off
  assert report.read_records(path) == [{"step": 1}]
  assert "its last line (20 characters, no newline) is cut off" in capsys.readouterr().err
  report.append_record(path, {"step": 2, "fd": 1.5})
  report.append_record(path, {"step": 3})
  with pytest.raises(report.RecordsError, match=r"results.jsonl, line 2: not a JSON record"):
    report.read_records(path)
  with open(path) as f:
    lines = f.read().splitlines()
  assert lines[0] == '{"step": 1}' and lines[2:] == ['{"step": 2, "fd": 1.5}', '{"step": 3}']
  with open(path, "w") as f:
    f.write("\n".join(lines[:1] + lines[2:]) + "\n")  # the damaged line removed
  assert report.read_records(path) == [{"step": 1}, {"step": 2, "fd": 1.5}, {"step": 3}]


def test_arms_of_other_batch_sizes_are_plotted_by_their_own_images_and_noted(tmp_path):
  """Each arm's curve is at steps x its own batch size (the plot took the first record's for
  every arm), and the report says that its tables count steps."""
  recs = []
  for arm, bs in (("ln", 128), ("big", 512)):
    cfg = {"train": {"batch_size": bs}, "schedule": {"name": "lognormal"}}
    recs += [{**_eval(arm, 0, s, 1.0 / s), "config": cfg} for s in (2, 4)]
  sizes = report.batch_sizes(recs)
  assert (sizes["ln"], sizes["big"], sizes["absent"]) == (128, 512, 128)
  text = report.write_report(str(tmp_path), recs, ["ln", "big"])
  assert "Batch sizes differ (ln 128, big 512): the tables and speedups count steps" in text
  curves = report.curves_by_arm(recs, "d")
  one = report.curves_plot({"big": curves["big"]}, ["big"], "t", None, 512)
  assert np.array_equal(report.curves_plot({"big": curves["big"]}, ["big"], "t", None, sizes), one)
  assert not np.array_equal(
    report.curves_plot({"big": curves["big"]}, ["big"], "t", None, 128), one
  )
  same = [{**r, "config": {**r["config"], "train": {"batch_size": 128}}} for r in recs]
  assert "Batch sizes differ" not in report.write_report(str(tmp_path), same, ["ln", "big"])


def test_a_missing_baseline_is_said_not_left_to_an_absent_table(tmp_path):
  """A --baseline without evaluations, or arms none of which is a fixed schedule, give no
  speedup table: the report says why instead of leaving it out silently."""
  recs = [
    {**_eval(arm, 0, s, v / s), "config": {"train": {"batch_size": 8}, "schedule": {"name": arm}}}
    for arm, v in (("infonoise", 1.0), ("vdmpp", 2.0))
    for s in (2, 4)
  ]
  text = report.write_report(str(tmp_path), recs, ["infonoise", "vdmpp"])
  assert "No speedup table: no arm has a fixed schedule to be the baseline; give --baseline" in text
  text = report.write_report(str(tmp_path), recs, ["lognormal", "infonoise", "vdmpp"], "lognormal")
  assert "No speedup table: the baseline `lognormal` has no evaluations here." in text
  text = report.write_report(str(tmp_path), recs, ["infonoise", "vdmpp"], "vdmpp")
  assert "No speedup table" not in text and "Speedup to the final value of `vdmpp`" in text


def test_a_tail_longer_than_the_baseline_curve_is_said():
  """--speedup_tail=10 on 3 evaluations averages the whole curve into the target: said above
  the table; a tail that fits says nothing."""
  recs = [_eval(a, 0, t, v / t) for a, v in (("b", 6.0), ("c", 3.0)) for t in (1, 2, 3)]
  curves = report.curves_by_arm(recs, "d")
  lines = report.speedup_lines(curves, "b", ["b", "c"], 0.0, tail=10)
  assert "The tail (10) is longer than a `b` run's 3 evaluations" in lines[2]
  assert not any(
    "longer than" in x for x in report.speedup_lines(curves, "b", ["b", "c"], 0.0, tail=3)
  )
