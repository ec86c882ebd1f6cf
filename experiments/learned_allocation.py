"""Where each arm of a schedule comparison spent its training effort: sampling density pi and
effective allocation phi = pi w (w the EDM loss weight) per band of sigma, for the learned
InfoNoise schedule of every run (from its final `m_K` in results.jsonl) and for the fixed laws.

  python experiments/learned_allocation.py --results=experiments/results/<dir>/results.jsonl \
      [--bands=0.002,0.05,0.5,80] [--out=<dir>/allocation.png]

The learned schedule is rebuilt from the record alone: the run's resolved config gives the
schedule, its final per-bin errors `m_K` are put into a fresh state and refreshed once with no
new data, which recomputes the gate pivot and the sampling table exactly as the run did. The
rebuilt pivot is checked against the run's logged `gate_pivot` (a mismatch is an error: the
record and the code disagree). Prints a markdown table (mass of pi and of phi per band, the
peak of phi, the pivot) and writes a plot of pi and phi against ln sigma.
"""

import argparse
import os
import sys

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import jax.numpy as jnp
import ml_collections
import numpy as np

from infonoise_jax import profiles
from infonoise_jax.evaluation import plots, report
from infonoise_jax.schedules import FIXED, make_schedule

GRID_POINTS = 400


def learned_state(sched, m_K: np.ndarray):
  """A state holding the run's final per-bin errors, refreshed once without new data."""
  state = sched.init_state()
  m = jnp.asarray(m_K, jnp.float32)
  if m.shape != state["m_K"].shape:
    raise ValueError(f"m_K has {m.shape[0]} bins, the schedule {state['m_K'].shape[0]}")
  state = {**state, "m_K": m, "seen_K": jnp.ones_like(state["seen_K"])}
  return sched._refresh(state)  # the run's own refresh: pivot and table from m_K


def band_masses(log_sigma_G, mass_G, edges) -> list[float]:
  sigma_G = np.exp(log_sigma_G)
  return [float(np.sum(mass_G[(sigma_G >= lo) & (sigma_G < hi)])) for lo, hi in edges]


def rows(records: list[dict], bands: list[float]):
  """(label, pi band masses, phi band masses, phi peak sigma, pivot) per learned run (its
  final record with m_K) and per fixed-law arm (once: its law is the same at every step).
  Adaptive peers keep no m_K in their records and are left out."""
  edges = list(zip(bands[:-1], bands[1:], strict=True))
  out, curves = [], {}
  seen_fixed = set()
  for r in records:
    if r.get("kind") != "eval" or r.get("resample") or "config" not in r:
      continue
    config = ml_collections.ConfigDict(r["config"])
    config.edm.sigma_data = r.get("sigma_data", config.edm.sigma_data)  # token data's, resolved
    sched = make_schedule(config)
    lo, hi = np.log(config.edm.sigma_min), np.log(config.edm.sigma_max)
    log_sigma_G = np.linspace(lo, hi, GRID_POINTS)
    if "m_K" in r:
      state = learned_state(sched, np.asarray(r["m_K"]))
      pivot = float(state["gate_pivot"])
      if not np.isclose(pivot, r["gate_pivot"], rtol=1e-3):
        raise ValueError(
          f"{r['arm']} seed {r['seed']}: rebuilt gate pivot {pivot:.5g} differs from the "
          f"logged {r['gate_pivot']:.5g}"
        )
      label = f"{r['arm']} seed {r['seed']} (step {r['step']})"
    elif config.schedule.name in FIXED and r["arm"] not in seen_fixed:
      seen_fixed.add(r["arm"])
      state, pivot, label = sched.init_state(), float("nan"), f"{r['arm']} (fixed law)"
    else:
      continue
    pi_G = np.asarray(profiles.normalize(sched.density(state, jnp.asarray(log_sigma_G))))
    phi_G = np.asarray(
      profiles.effective_allocation(jnp.asarray(log_sigma_G), pi_G, config.edm.sigma_data)
    )
    peak = float(np.exp(log_sigma_G[int(np.argmax(phi_G))]))
    out.append(
      (
        label,
        band_masses(log_sigma_G, pi_G, edges),
        band_masses(log_sigma_G, phi_G, edges),
        peak,
        pivot,
      )
    )
    curves[label] = (log_sigma_G, pi_G, phi_G)
  return edges, out, curves


def markdown(edges, table_rows) -> str:
  names = [f"{lo:g}-{hi:g}" for lo, hi in edges]
  head = "| run | " + " | ".join(f"pi {n}" for n in names) + " | "
  head += " | ".join(f"phi {n}" for n in names) + " | phi peak sigma | pivot c |"
  lines = [head, "|---" * (2 * len(names) + 3) + "|"]
  for label, pi, phi, peak, pivot in table_rows:
    cells = [f"{v:.2f}" for v in pi] + [f"{v:.2f}" for v in phi]
    c = "-" if np.isnan(pivot) else f"{pivot:.4f}"
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {peak:.3g} | {c} |")
  return "\n".join(lines)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--results", required=True, help="a compare_schedules.py results.jsonl")
  p.add_argument("--bands", default="0.002,0.05,0.5,80", help="sigma band edges")
  p.add_argument("--out", default="", help="PNG of pi and phi against ln sigma")
  args = p.parse_args(argv)
  bands = [float(b) for b in args.bands.split(",")]
  if len(bands) < 2 or np.any(np.diff(bands) <= 0):
    p.error(f"--bands needs at least two increasing edges, got {args.bands}")
  records = report.read_records(args.results)
  if not records:
    p.error(f"--results: no records in {args.results}")
  edges, table_rows, curves = rows(records, bands)
  print(markdown(edges, table_rows))
  if args.out and curves:
    (log_sigma_G, *_), *_ = curves.values()  # one grid: every run of a file shares the range
    panels = [
      plots.schedule_plot(log_sigma_G, {k: v[which] for k, v in curves.items()}, title)
      for which, title in ((1, "sampling density pi"), (2, "effective allocation phi = pi w"))
    ]
    plots.save_png(args.out, np.concatenate(panels, axis=1))


if __name__ == "__main__":
  main()
