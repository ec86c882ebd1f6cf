"""Tables, curves and speedups from a schedule comparison's results.jsonl.

Records (experiments/compare_schedules.py): `kind == "eval"` lines carry data, arm, seed,
step, images_seen, the metric `fd` (lower is better), `resample` (a second evaluation of the
same model with other sample seeds, at the last step) and the resolved config; `kind ==
"floor"` lines the metric of real data against itself. The metric's noise (the speedup's
tolerance, evaluation/speedup.py) is the mean |fd - fd_resample| over the runs of a data kind.

Inception FID lines written by experiments/fid_of_samples.py for the samples the harness saved
(`final_<data>_<arm>.npz`) join the report through `inception_records` as a section of their
own per data kind: the pixel-space curve metric can rank schedules differently
(experiments/RESULTS.md section 12).
"""

import collections
import fcntl
import json
import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from infonoise_jax.evaluation import plots, speedup
from infonoise_jax.schedules import FIXED

FIXED_SCHEDULES = FIXED  # the fixed laws (schedules registry)


class RecordsError(ValueError):
  """A results file holds a line that is not a JSON record (other than a cut-off last line)."""


def read_records(path: str) -> list[dict]:
  """The JSON lines of a results file (none when it does not exist yet). A last line without
  its newline that does not parse is a write cut off (a hard kill, a full disk): it is left
  out with a warning on stderr, and its evaluation, missing from the records, is done again
  by a rerun. Any other line that does not parse is a RecordsError naming the file and line."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.read().split("\n")  # the last item is "" when the file ends in a newline
  out = []
  for i, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines):
        print(
          f"warning: {path}: its last line ({len(line)} characters, no newline) is cut off, a "
          "write interrupted by a kill or a full disk; read without it (the next record "
          "starts on a new line)",
          file=sys.stderr,
        )
        continue
      raise RecordsError(
        f"{path}, line {i}: not a JSON record ({e.msg}); a record there was damaged: remove or "
        "repair that line (the evaluation it held is then done again by a rerun)"
      ) from None
  return out


def append_record(path: str, rec: dict) -> None:
  """One JSON line, under an exclusive lock (several processes may append to one file), on a
  line of its own even after a write that was cut off (read_records leaves that line out)."""
  with open(path, "ab+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    cut = False
    if f.seek(0, os.SEEK_END) > 0:
      f.seek(-1, os.SEEK_END)
      cut = f.read(1) != b"\n"
    f.write((("\n" if cut else "") + json.dumps(rec) + "\n").encode())
    f.flush()
    fcntl.flock(f, fcntl.LOCK_UN)


def curves_by_arm(records, data: str, metric: str = "fd") -> dict[str, dict[int, speedup.Curve]]:
  """{arm: {seed: Curve}} from the non-resample evaluations of one data kind."""
  pts = collections.defaultdict(dict)
  for r in records:
    if r.get("kind") == "eval" and r["data"] == data and not r.get("resample") and metric in r:
      pts[(r["arm"], r["seed"])][r["step"]] = r[metric]
  out = collections.defaultdict(dict)
  for (arm, seed), by_step in pts.items():
    out[arm][seed] = speedup.Curve.of(list(by_step), list(by_step.values()))
  return dict(out)


ROUNDING = 1e-6  # metric_noise's floor, relative to the metric's median value


def metric_noise(records, data: str, metric: str = "fd") -> float:
  """The metric's noise between two models' evaluations: the mean |metric - metric of a
  resampled evaluation| at the same (arm, seed, step); nan when no run has a resampled
  evaluation (the noise was not measured).

  Where every evaluation shares one draw (compare_schedules' `eval_draw` "fixed": the same
  sample seeds for every arm, training seed and step), the part of a draw's effect that moves
  every model alike cancels in each comparison the report makes, so only the rest is noise:
  the differences' spread about their mean over runs, sqrt(n / (n - 1)) * mean |d - mean d|
  (the mean over one run alone). Near a metric's floor that shared part dominates (RESULTS.md
  sections 27-28)."""
  first, second = {}, {}
  for r in records:
    if r.get("kind") == "eval" and r["data"] == data and metric in r:
      (second if r.get("resample") else first)[(r["arm"], r["seed"], r["step"])] = r[metric]
  d = np.array([first[k] - v for k, v in second.items() if k in first])
  if not len(d):
    return float("nan")
  if not fixed_draw(records, data) or len(d) == 1:
    noise = float(np.mean(np.abs(d)))
  else:
    noise = float(np.sqrt(len(d) / (len(d) - 1)) * np.mean(np.abs(d - d.mean())))
  # Never below float rounding of the metric's size: runs that are one model (an adaptive arm
  # still in its warm-up beside its base law) differ in the 8th digit, and a tolerance of
  # that order called the same model "worse" (2026-12-07 probe).
  return max(noise, ROUNDING * float(np.median(np.abs(list(first.values())))))


def eval_draw(record: dict) -> str:
  """The rule an evaluation's samples were drawn by (compare_schedules --eval_draw): "fixed"
  (one draw for every step) or "per_step" (records written before the flag existed)."""
  return record.get("eval_draw", "per_step")


def fixed_draw(records, data: str) -> bool:
  """Whether every evaluation of `data` shares one draw (compare_schedules --eval_draw=fixed)."""
  evals = [r for r in records if r.get("kind") == "eval" and r["data"] == data]
  return bool(evals) and all(eval_draw(r) == "fixed" for r in evals)


def primary_metric(records, data: str) -> str:
  """The metric the evaluations of `data` rank by (`metric` of their records; default fd)."""
  for r in records:
    if r.get("kind") == "eval" and r["data"] == data:
      return r.get("metric", "fd")
  return "fd"


METRIC_LABELS = {
  "fd": "Frechet distance, pixel space",
  "frechet": "Frechet distance, classifier features",
  "fid": "Inception FID",
}


def schedule_of(records, arm: str) -> str:
  for r in records:
    if r.get("kind") == "eval" and r["arm"] == arm:
      return r["config"]["schedule"]["name"]
  return ""


def table(curves: dict[str, dict[int, speedup.Curve]], arms: Sequence[str]) -> str:
  """Markdown: seed-mean metric per evaluation step (every step any arm evaluated; `-` where an
  arm has none), min..max over seeds at each arm's last step, with the count of seeds there
  when fewer than the arm's (a run cut short)."""
  arms = [a for a in arms if a in curves]
  steps = sorted({s for a in arms for c in curves[a].values() for s in c.steps})
  head = "| arm | seeds | " + " | ".join(f"{int(s)}" for s in steps) + " |"
  lines = [head, "|---" * (len(steps) + 2) + "|"]
  for a in arms:
    mine = seed_values(curves[a])
    last = max(mine)
    cells = []
    for s in steps:
      v = mine.get(s, [])
      cell = f"{np.mean(v):.4g}" if v else "-"
      if s == last:
        fewer = f"; {len(v)} of {len(curves[a])} seeds" if len(v) < len(curves[a]) else ""
        cell += f" ({min(v):.4g}..{max(v):.4g}{fewer})"
      cells.append(cell)
    lines.append(f"| {a} | {len(curves[a])} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def seed_values(runs: dict[int, speedup.Curve]) -> dict[float, list[float]]:
  """{step: the values of the seeds evaluated there}, every step any seed has, in order: what
  the table and the curves plot average (fewer values at a step = runs cut short)."""
  by_seed = [dict(zip(c.steps, c.values, strict=True)) for c in runs.values()]
  return {s: [c[s] for c in by_seed if s in c] for s in sorted({s for c in by_seed for s in c})}


def speedups(curves, baseline: str, arms: Sequence[str], tolerance: float, tail: int = 1) -> dict:
  """{arm: (pooled, {seed: per-seed})} speedups over `baseline` (speedup.pooled / per_seed) for
  every arm other than the baseline that has curves: computed once for the table and the plot.
  Arms whose seeds the baseline does not share (runs of other seeds gathered into one report)
  get no per-seed entries: the table says so."""
  return {
    a: (
      speedup.pooled(curves[baseline], curves[a], tolerance, tail),
      speedup.per_seed(curves[baseline], curves[a], tolerance, tail)
      if set(curves[baseline]) & set(curves[a])
      else {},
    )
    for a in arms
    if a != baseline and a in curves
  }


def speedup_lines(
  curves,
  baseline: str,
  arms: Sequence[str],
  tolerance: float,
  why: str = "metric noise",
  tail: int = 1,
  found: dict | None = None,
) -> list[str]:
  """The speedup table, with each arm's final seed-mean value beside the baseline's: a curve
  can reach the target (the first crossing counts) and end worse than the baseline; the last
  column says so when the gap exceeds the tolerance. `tail` > 1: "final" is the mean of each
  curve's last `tail` evaluations (a flat baseline's last point alone sets a noisy target).
  Runs cut short are named: a seed's cell says where its run ends, the pooled cell where the
  seed-mean curve ends, and the finals average the runs at the arm's last step ("k of n seeds").
  `found`: `speedups(...)` of the same arguments, when the caller has it already."""
  found = speedups(curves, baseline, arms, tolerance, tail) if found is None else found
  lines = [
    f"Speedup to the {_target(tail)} of `{baseline}` (tolerance = {why} {tolerance:.4g}):",
    "",
  ]
  shortest = min(len(c.steps) for c in curves[baseline].values())
  if tail > shortest:  # speedup.Curve.final then averages the whole curve
    lines += [
      f"The tail ({tail}) is longer than a `{baseline}` run's {shortest} evaluations: its target "
      "is the mean of all of them, early ones included; give a smaller --speedup_tail.",
      "",
    ]
  lines += [
    f"| arm | pooled | per seed | final (seed mean) vs `{baseline}`'s |",
    "|---|---|---|---|",
  ]
  for a, (pool, per) in found.items():
    cells = _seed_cells(per, curves, a, baseline)
    pooled = pool.describe()
    cut = [
      f"`{arm}` to {ends:g}"
      for arm in (a, baseline)
      if (ends := min(c.steps[-1] for c in curves[arm].values())) < _last_step(curves[arm])
    ]
    if cut:  # speedup.mean_curve keeps the steps every seed has
      pooled += f" (seed means over the steps all seeds have: {', '.join(cut)})"
    if set(curves[a]) != set(curves[baseline]):
      pooled += (
        f" (seed means of seeds {sorted(curves[a])} against `{baseline}`'s "
        f"{sorted(curves[baseline])})"
      )
    upto = _common_last_step(curves[a], curves[baseline])
    mine, my_seeds = _final(curves[a], tail, upto)
    theirs, their_seeds = _final(curves[baseline], tail, upto)
    verdict = (
      "worse" if mine > theirs + tolerance else "better" if mine < theirs - tolerance else "tie"
    )
    if upto is not None:  # a longer run's extra steps would decide "better" on their own
      longer = [
        f"`{arm}` runs to {_last_step(curves[arm]):g}"
        for arm in (a, baseline)
        if _last_step(curves[arm]) > upto
      ]
      verdict += f", at step {upto:g}; {', '.join(longer)}"
    lines.append(
      f"| {a} | {pooled} | {cells} | {mine:.4g}{my_seeds} vs {theirs:.4g}{their_seeds} "
      f"({verdict}) |"
    )
  return lines


def _target(tail: int) -> str:
  """The speedup's target in words (speedup.Curve.final's `tail`)."""
  return "final value" if tail == 1 else f"mean of the last {tail} evaluations"


def _seed_cells(per: dict, curves, arm: str, baseline: str) -> str:
  """The per-seed cell of a speedup row: each seed's speedup, with where a run cut short ends;
  which seeds each side has when they share none."""
  last = _last_step(curves[arm])
  return ", ".join(
    f"{s}: {v.describe()}"
    + (f" (run ends at {v.candidate_last_step:g})" if v.candidate_last_step < last else "")
    for s, v in per.items()
  ) or (f"no seed in common (seeds {sorted(curves[arm])}, `{baseline}` {sorted(curves[baseline])})")


# Metrics besides the primary one whose speedups the report also gives: every one where lower is
# better (sequence_metrics' divergences and distances, the decoded binarized FD). A key ending
# in a number is a family (kmer_js_3, kmer_js_4, ...). gc_mean_diff is signed: not a metric here.
OTHER_METRICS = ("fd", "fd_decoded", "frechet", "kmer_js_", "ngram_js_", "gc_w1", "nll_per_char")


def other_metrics(records, data: str, primary: str) -> list[str]:
  """The OTHER_METRICS that every (first-draw) evaluation of `data` carries as a finite number,
  less the primary one, in OTHER_METRICS' order (families by size)."""
  evals = [
    r for r in records if r.get("kind") == "eval" and r["data"] == data and not r.get("resample")
  ]
  if not evals:
    return []
  keys = set.intersection(*(set(r) for r in evals)) - {primary}

  def rank(k: str) -> tuple[int, int]:
    for i, m in enumerate(OTHER_METRICS):
      if k == m:
        return i, 0
      if m.endswith("_") and k.startswith(m) and k[len(m) :].isdigit():
        return i, int(k[len(m) :])
    return -1, 0

  def finite(k: str) -> bool:  # a curve needs finite values (speedup.Curve)
    return all(isinstance(r[k], (int, float)) and np.isfinite(r[k]) for r in evals)

  return sorted((k for k in keys if rank(k)[0] >= 0 and finite(k)), key=rank)


def other_metric_speedup_lines(
  records, data: str, primary: str, baseline: str, arms: Sequence[str], tail: int = 1
) -> list[str]:
  """Speedup to the baseline's final value on each of the other metrics the evaluations carry
  (other_metrics), the same rule as the primary table (per seed and pooled, first crossing,
  bounds named), each with its own noise as tolerance: whether the primary metric's verdict
  holds on the rest (RESULTS.md section 47: DNA's short k-mer counts). [] when there are none."""
  rows = []
  for metric in other_metrics(records, data, primary):
    curves = curves_by_arm(records, data, metric)
    if baseline not in curves:
      continue
    noise = metric_noise(records, data, metric)
    tol = noise if np.isfinite(noise) else 0.0
    for a, (pool, per) in speedups(curves, baseline, arms, tol, tail).items():
      cells = _seed_cells(per, curves, a, baseline)
      tol_cell = f"{tol:.3g}" if np.isfinite(noise) else "0 (noise not measured)"
      rows.append(f"| {a} | `{metric}` | {tol_cell} | {pool.describe()} | {cells} |")
  if not rows:
    return []
  return [
    f"The other metrics: speedup to the {_target(tail)} of `{baseline}` on each (tolerance = "
    "its own metric noise):",
    "",
    "| arm | metric | tolerance | pooled | per seed |",
    "|---|---|---|---|---|",
    *rows,
  ]


FLAT_WINDOW = 3  # the last evaluations an arm's end-of-budget slope is fitted through


def flattening_lines(
  curves,
  arms: Sequence[str],
  noise: float | None,
  why: str = "metric noise",
  window: int = FLAT_WINDOW,
) -> list[str]:
  """Has each arm's curve flattened by the end of its budget? A least-squares line through the
  seed means at the last `window` evaluations that every seed has (runs cut short do not mix
  steps into it) gives the change per evaluation interval (and per 1,000 steps). The reading:
  "flat" when that change is within the noise (`noise`, the tolerance the speedups use; None
  when unmeasured: no arm reads as flat), "slowing" when it is within the seed spread (max -
  min over seeds at the last of those steps) but not the noise, else "still improving" or
  "getting worse" (lower is better). The last column counts the seeds whose value at the end
  is below their value at the start of the fitted span."""
  if window < 2:
    raise ValueError(f"a slope needs at least 2 evaluations; got window={window}")
  against = (
    "not measured, so none reads as flat" if noise is None else f"{noise:.4g} (within it: flat)"
  )
  lines = [
    f"End of budget: the seed-mean change per evaluation interval, fitted through the last "
    f"{window} evaluations every seed has, against the {why}: {against}, "
    f"and the seed spread at the last of them (within it: slowing):",
    "",
    "| arm | fitted steps | change per interval | per 1,000 steps | seed spread "
    "| seeds lower at the end | reading |",
    "|---|---|---|---|---|---|---|",
  ]
  for a in [a for a in arms if a in curves]:
    at = seed_values(curves[a])  # at a step every seed has, its values come in seed order
    common = [s for s, v in at.items() if len(v) == len(curves[a])]
    if len(common) < window:
      n = f"{len(common)} evaluation" + ("" if len(common) == 1 else "s")
      lines.append(f"| {a} | {n} | - | - | - | - | too few to fit |")
      continue
    span = common[-window:]
    slope = float(np.polyfit(span, [np.mean(at[s]) for s in span], 1)[0])
    change = slope * (span[-1] - span[0]) / (window - 1)
    ends = at[span[-1]]
    spread = max(ends) - min(ends)
    lower = sum(end < start for end, start in zip(ends, at[span[0]], strict=True))
    if noise is not None and abs(change) <= noise:
      reading = f"flat: within the {why}"
    elif abs(change) <= spread:
      reading = "slowing: within the seed spread, " + ("falling" if change < 0 else "rising")
    else:
      reading = "still improving" if change < 0 else "getting worse"
    steps = "-".join(f"{s:g}" for s in (span[0], span[-1]))
    lines.append(
      f"| {a} | {steps} | {change:+.4g} | {slope * 1000:+.4g} | {spread:.4g} "
      f"| {lower} of {len(ends)} | {reading} |"
    )
  return lines


def _common_last_step(mine: dict, theirs: dict) -> float | None:
  """None when both arms end at the same step (each arm's final is compared); else the last
  step both evaluated, at or before the shorter arm's end, so that a longer run's extra steps
  do not decide "better" (None again if they share no step)."""
  if _last_step(mine) == _last_step(theirs):
    return None
  shared = set(seed_values(mine)) & set(seed_values(theirs))
  return max(shared, default=None)


def _last_step(runs: dict[int, speedup.Curve]) -> float:
  return max(c.steps[-1] for c in runs.values())


def _final(
  runs: dict[int, speedup.Curve], tail: int, upto: float | None = None
) -> tuple[float, str]:
  """The seed mean of the runs' final values at the arm's last step, and "" or " (k of n seeds)"
  when runs cut short end before it (their earlier finals would mix steps into the mean).
  `upto`: each run's evaluations after that step are left out first."""
  if upto is not None:
    runs = {
      seed: speedup.Curve(c.steps[:n], c.values[:n])
      for seed, c in runs.items()
      if (n := int(np.searchsorted(c.steps, upto, side="right")))
    }
  last = _last_step(runs)
  ended = [c.final(tail) for c in runs.values() if c.steps[-1] == last]
  fewer = f" ({len(ended)} of {len(runs)} seeds)" if len(ended) < len(runs) else ""
  return float(np.mean(ended)), fewer


def plain_log_ticks(axis) -> None:
  """Labels a log-scale matplotlib axis (after its limits are set) with plain numbers (0.1, 8,
  9) where matplotlib writes 10^-1 and 8x10^0. Minor ticks: every one labelled on an axis of
  less than a decade (most curves: it may hold no decade tick), 2 and 5 on one of up to two
  decades, none beyond."""
  from matplotlib.ticker import FuncFormatter, NullFormatter

  plain = FuncFormatter(lambda v, _: f"{v:g}")
  two_five = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")
  axis.set_major_formatter(plain)
  low, high = axis.get_view_interval()
  decades = np.log10(high / low)
  axis.set_minor_formatter(plain if decades < 1 else two_five if decades < 2 else NullFormatter())


def curves_plot(
  curves,
  arms: Sequence[str],
  title: str,
  floor: float | None,
  batch: int | Mapping[str, int],
  metric: str = "fd",
):
  """Metric against training images seen (steps x the arm's batch size: `batch`, one for all
  or {arm: batch size}): seed mean line, min..max band, at every step any seed evaluated (as
  the table); an open marker where some seeds have no value (a run cut short), so a late
  point of fewer seeds is shown and told apart. (H, W, 3) uint8."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(7.5, 4.5), dpi=100)
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for i, a in enumerate(x for x in arms if x in curves):
    at = seed_values(curves[a])
    vals = list(at.values())
    kimg = np.asarray(list(at)) * (batch[a] if isinstance(batch, Mapping) else batch) / 1000.0
    mean = np.array([np.mean(v) for v in vals])
    label = f"{a} ({len(curves[a])} seeds)"  # markers: the evaluated steps, lines between them
    ax.plot(kimg, mean, color=f"C{i}", label=label, lw=1.8, marker="o", ms=3)
    fewer = np.array([len(v) < len(curves[a]) for v in vals])
    if fewer.any():
      ax.plot(kimg[fewer], mean[fewer], ls="none", marker="o", ms=7, mfc="white", color=f"C{i}")
    ax.fill_between(kimg, [min(v) for v in vals], [max(v) for v in vals], color=f"C{i}", alpha=0.2)
  if floor is not None:
    ax.axhline(floor, color="k", ls=":", lw=1.0, label="floor (real data)")
  ax.set_yscale("log")
  plain_log_ticks(ax.yaxis)
  ax.set_xlabel("training images seen (thousands)")
  ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (lower is better)")
  ax.set_title(title)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize="small")
  fig.tight_layout()
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def speedup_plot(found: dict, baseline: str, title: str):
  """Per-seed (dots) and pooled (bar) speedups over the baseline (`found`: `speedups(...)`);
  'not reached' at 0; a candidate already there at step 0 is named, not drawn."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(6.5, 4.0), dpi=100)
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  others = list(found)
  for i, (pooled, per) in enumerate(found.values()):
    pool = pooled.ratio if pooled.ratio is not None and np.isfinite(pooled.ratio) else None
    ax.bar(i, pool or 0.0, color=f"C{i}", alpha=0.5)
    if pool is None:
      what = "not reached" if pooled.ratio is None else "at step 0"
      ax.text(i, 0.02, what, ha="center", rotation=90, fontsize="small")
    ys = [0.0 if v.ratio is None else v.ratio for v in per.values()]
    ys = [y for y in ys if np.isfinite(y)]  # a candidate there at step 0 has no bar height
    ax.scatter([i] * len(ys), ys, color="k", s=12, zorder=3)
  ax.axhline(1.0, color="k", lw=0.8)
  ax.set_xticks(range(len(others)), others, rotation=20, fontsize="small")
  ax.set_ylabel(f"speedup to {baseline}'s final value")
  ax.set_title(title)
  fig.tight_layout()
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def grid_table(records: list[dict], data: str) -> str:
  """Markdown: inference grids on the final models, seed-mean FD (min..max) per solver/grid/NFE."""
  rows: dict[tuple, dict[int, list[float]]] = {}
  for r in records:
    if r.get("kind") == "grid" and r["data"] == data:
      rows.setdefault((r["arm"], r["solver"], r["grid"]), {}).setdefault(r["nfe"], []).append(
        r["fd"]
      )
  if not rows:
    return ""
  nfes = sorted({n for row in rows.values() for n in row})
  lines = ["| arm | solver | grid | " + " | ".join(f"{n} NFE" for n in nfes) + " |"]
  lines.append("|---" * (3 + len(nfes)) + "|")
  for (arm, solver, grid), row in sorted(rows.items()):
    cells = [
      f"{np.mean(row[n]):.4g} ({min(row[n]):.4g}..{max(row[n]):.4g})" if n in row else ""
      for n in nfes
    ]
    lines.append(f"| {arm} | {solver} | {grid} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def inception_records(lines: list[dict]) -> list[dict]:
  """fid_of_samples.py lines as report records: `kind == "fid"` -> an eval record with metric
  `fid` (data and arm from the samples file: `final_<data>_<arm>.npz`, or the grid study's
  `grid_<data>_<arm>.npz`, whose arms are `<arm>@<solver>-<grid>-<levels>`), `kind ==
  "floor"` -> a floor per sample count. Lines of other files or kinds are left out. A line with
  the FIDs of its set's two halves (`fid_halves`) gives its eval record `fid_draw_noise`, the
  expected |FID difference| between two draws of the whole set: |half 1 - half 2| / sqrt(2),
  since a FID's draw noise scales as 1 / sqrt(count) (docs/fid.md)."""
  out = []
  for r in lines:
    if r.get("kind") == "fid":
      name = str(r.get("samples", ""))
      run_arm = str(r["arm"]).split("@")[0]  # a grid setting's arm: the trained run's
      prefix = next((p for p in ("final_", "grid_") if name.startswith(p)), None)
      suffix = f"_{run_arm}.npz"
      if prefix is None or not name.endswith(suffix):
        continue
      data = name[len(prefix) : -len(suffix)]
      rec = {"kind": "eval", "data": data, "arm": r["arm"], "seed": r["seed"], "step": r["step"]}
      rec |= {"fid": r["fid"], "metric": "fid", "num_samples": r["num"], "resample": False}
      if r.get("fid_halves"):
        rec["fid_draw_noise"] = abs(r["fid_halves"][0] - r["fid_halves"][1]) / np.sqrt(2.0)
      out.append(rec)
    elif r.get("kind") == "floor":
      floor = {"kind": "fid_floor", "num_samples": r["num"], "fid": r["fid"]}
      out.append(floor | ({"binarize": bool(r["binarize"])} if "binarize" in r else {}))
  return out


def inception_floor(fid_recs: list[dict], num: int, binarized: bool | None = None):
  """The Inception FID floor at `num` samples (None if not scored): of binarized real images
  when `binarized`, of plain ones when False (floors that do not say count for either)."""
  floors = [r for r in fid_recs if r["kind"] == "fid_floor" and r["num_samples"] == num]
  if binarized is not None and any("binarize" in r for r in floors):
    floors = [r for r in floors if r.get("binarize") == binarized]
  return floors[-1]["fid"] if floors else None


def inception_noise(fid_recs: list[dict], data: str) -> float | None:
  """The Inception FID's draw noise for `data`: the mean `fid_draw_noise` of its scored sets
  (None when no set was scored with its halves). Where the sets share one draw of sampler
  seeds, part of that noise moves every model alike, so it overstates the noise between two
  models' values; near the floor the halves overstate it too (docs/fid.md)."""
  noise = [
    r["fid_draw_noise"]
    for r in fid_recs
    if r["kind"] == "eval" and r["data"] == data and "fid_draw_noise" in r
  ]
  return float(np.mean(noise)) if noise else None


def inception_section(
  fid_recs: list[dict], data: str, arms: Sequence[str], baseline: str, binarized=None
) -> list[str]:
  """Markdown: Inception FID per arm and step (seed mean, min..max at the last step), the
  floor at the same sample count, and the speedup to `baseline`'s final FID and each arm's
  flattening against the draw noise (`inception_noise`; unmeasured for sets scored without
  their halves: tolerance 0, and none reads as flat). Each arm at the largest sample count it
  was scored with (FIDs of other counts differ by their bias, so one curve never mixes them;
  the grid study's settings may have their own count); the counts left out are named."""
  evals = [r for r in fid_recs if r["kind"] == "eval" and r["data"] == data]
  largest = {}
  for r in evals:
    largest[r["arm"]] = max(largest.get(r["arm"], 0), r["num_samples"])
  shown = [r for r in evals if r["num_samples"] == largest[r["arm"]]]
  curves = curves_by_arm(shown, data, "fid")
  if not curves:
    return []
  nums = sorted({r["num_samples"] for r in shown})
  md = ["", f"Inception FID ({'/'.join(map(str, nums))} samples per model):", ""]
  main = [a for a in arms if a in curves] or sorted(curves)
  md.append(table(curves, main))
  floors = {n: inception_floor(fid_recs, n, binarized) for n in nums}
  known = [f"{floors[n]:.4g} at {n}" for n in nums if floors[n] is not None]
  md.append(f"Floor (real images, same count): {', '.join(known)}." if known else "No floor.")
  left = sorted({(r["arm"], r["num_samples"]) for r in evals} - {(a, largest[a]) for a in largest})
  if left:
    names = ", ".join(f"{a} at {n}" for a, n in left)
    md.append(f"Also scored at other sample counts (not shown): {names}.")
  noise = inception_noise([r for r in shown if r["arm"] in main], data)
  if baseline in curves and set(arms) & set(curves) - {baseline}:
    why = (
      "none, the noise of one draw per model not measured:"
      if noise is None
      else "draw noise, from each scored set's two halves:"
    )
    tolerance = 0.0 if noise is None else noise
    arms_in = [a for a in arms if a in curves]
    md += ["", *speedup_lines(curves, baseline, arms_in, tolerance, why)]
  # scored at a few uneven steps: the last interval alone (a line through three points
  # would reach back over much of the budget)
  md += ["", *flattening_lines(curves, main, noise, "noise of one draw per model", window=2)]
  others = sorted(set(curves) - set(main))  # the grid study's settings (<arm>@<setting>)
  if others:
    md += ["", "Inception FID of the grid study's settings:", "", table(curves, others)]
  return md


def inception_plot(
  fid_recs: list[dict], data: str, arms: Sequence[str], binarized, batch: int | Mapping[str, int]
):
  """The arms' Inception FID curves at the largest sample count any of them was scored with,
  with the floor at that count (None when no arm was scored)."""
  scored = [r for r in fid_recs if r["kind"] == "eval" and r["data"] == data and r["arm"] in arms]
  if not scored:
    return None
  n = max(r["num_samples"] for r in scored)
  curves = curves_by_arm([r for r in scored if r["num_samples"] == n], data, "fid")
  title = f"{data}: Inception FID, {n} samples per model"
  return curves_plot(curves, arms, title, inception_floor(fid_recs, n, binarized), batch, "fid")


def batch_sizes(evals: list[dict]) -> Mapping[str, int]:
  """Each arm's training batch size, from its evaluations' resolved configs (records without
  one take the first record's): the curves' x axis is images seen, steps x this."""
  sizes = {}
  for r in evals:
    if "config" in r:
      sizes.setdefault(r["arm"], int(r["config"]["train"]["batch_size"]))
  first = next(iter(sizes.values()), 1)
  return collections.defaultdict(lambda: first, sizes)


def write_report(
  out: str,
  records: list[dict],
  arms: Sequence[str],
  baseline: str = "",
  fid_lines: Sequence[dict] = (),
  notes: Sequence[str] = (),
  tail: int = 1,
) -> str:
  """summary.md, curves_<data>.png and speedup_<data>.png under `out` (and inception_<data>.png
  when `fid_lines` score some arm's samples); returns the markdown.
  `fid_lines`: experiments/fid_of_samples.py output for the saved samples, if any; `notes`:
  what the caller found about the records (e.g. some made with other settings), listed first;
  `tail`: the pixel-metric speedups' target is the mean of the baseline's last `tail`
  evaluations (speedup_lines)."""
  fid_recs = inception_records(list(fid_lines))
  md = ["Notes on the records:", "", *(f"- {n}" for n in notes), ""] if notes else []
  for data in sorted({r["data"] for r in records if r.get("kind") == "eval"}):
    metric = primary_metric(records, data)
    curves = curves_by_arm(records, data, metric)
    if not curves:
      continue
    floors = [r for r in records if r.get("kind") == "floor" and r["data"] == data]
    floor = floors[0][metric] if floors else None
    noise = metric_noise(records, data, metric)
    shared = ", less the part one draw gives every run alike" if fixed_draw(records, data) else ""
    measured = np.isfinite(noise)
    noise = noise if measured else 0.0  # the speedup's tolerance
    evals = [r for r in records if r.get("kind") == "eval" and r["data"] == data]  # the curves' own
    batch = batch_sizes(evals)
    md += [f"## {data}", "", f"Metric: `{metric}` (lower is better).", "", table(curves, arms), ""]
    sizes = {a: batch[a] for a in arms if a in curves}
    if len(set(sizes.values())) > 1:
      md += [
        "Batch sizes differ ("
        + ", ".join(f"{a} {b}" for a, b in sizes.items())
        + "): the tables and speedups count steps, the curves plot training images seen.",
        "",
      ]
    known = floor is not None  # 0.0 is a floor (every image of a small set against itself)
    drawn = evals[0].get("num_samples")  # each evaluation's sample count
    whole = known and drawn and floors[0].get("num_samples", drawn) < drawn
    if whole:  # every real example against its own statistics: 0, and no bound on the curves
      md.append(
        f"Floor (real data): {floor:.4g}, of all {floors[0]['num_samples']} examples against "
        f"themselves: the data holds fewer than the {drawn} samples each evaluation draws, so "
        "this is no floor for them."
      )
    else:
      md.append(f"Floor (real data, same sample count): {floor:.4g}." if known else "No floor.")
    md.append(
      f"Metric noise (mean |{metric} - {metric} resampled| at the last step{shared}): {noise:.4g}."
      if measured
      else "Metric noise: not measured (no resampled evaluation); speedups use tolerance 0."
    )
    if any("fd_decoded" in r for r in records if r.get("data") == data):
      md += ["", "Decoded samples (thresholded to the two levels):", ""]
      md.append(table(curves_by_arm(records, data, "fd_decoded"), arms))
    fixed = [a for a in curves if schedule_of(records, a) in FIXED_SCHEDULES]
    base = baseline or (speedup.best_arm({a: curves[a] for a in fixed}) if fixed else "")
    others = set(arms) & set(curves) - {base}
    if others and base not in curves:  # said, not left to an absent table
      md += [
        "",
        f"No speedup table: the baseline `{base}` has no evaluations here."
        if base
        else "No speedup table: no arm has a fixed schedule to be the baseline; give "
        "--baseline=<arm>.",
      ]
    for stale in (f"speedup_{data}.png", f"inception_{data}.png"):  # an earlier report's,
      if os.path.exists(os.path.join(out, stale)):  # drawn again below if still due
        os.remove(os.path.join(out, stale))
    if base in curves and others:  # a baseline alone has no table
      found = speedups(curves, base, arms, noise, tail)
      md += ["", *speedup_lines(curves, base, arms, noise, tail=tail, found=found)]
      more = other_metric_speedup_lines(records, data, metric, base, arms, tail)
      md += ["", *more] if more else []
      img = speedup_plot(found, base, f"{data}: speedup over {base}")
      plots.save_png(os.path.join(out, f"speedup_{data}.png"), img)
    md += ["", *flattening_lines(curves, arms, noise if measured else None)]
    binarized = any(
      r["config"].get("data", {}).get("binarize", False)
      for r in records
      if r.get("kind") == "eval" and r["data"] == data and "config" in r
    )
    md += inception_section(fid_recs, data, arms, base, binarized)
    img = inception_plot(fid_recs, data, arms, binarized, batch)
    if img is not None:
      plots.save_png(os.path.join(out, f"inception_{data}.png"), img)
    grids = grid_table(records, data)
    if grids:
      md += ["", "Inference grids on the final models (FD, seed mean, min..max):", "", grids]
    img = curves_plot(curves, arms, data, floor, batch, metric)
    plots.save_png(os.path.join(out, f"curves_{data}.png"), img)
    md.append("")
  text = "\n".join(md)
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text + "\n")
  return text
