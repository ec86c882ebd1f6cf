"""The comparison report: metric noise, tables of incomplete runs, the inference-grid table."""

import math

from infonoise_jax.evaluation import report


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
