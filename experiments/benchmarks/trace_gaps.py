"""Where a traced stretch of training spent the device's time: busy, idle, and in what gaps.

Reads the newest device trace under a folder (the trainer's, written by
`--config.train.trace_start=N --config.train.trace_steps=M` into `<workdir>/tensorboard`),
through profile_step.py's reader (GPU stream lines only), and prints per device: the span
from its first to its last kernel, the time some kernel ran (the union over its streams), the
idle rest, the number of kernels (per step with --steps), the idle gaps by length, and the
kernels that took the most time.

  python experiments/benchmarks/trace_gaps.py --steps=30 <workdir>/tensorboard

The trainer starts its trace on an idle device, so the span holds the traced steps only.
Many short gaps (microseconds) between many short kernels mean the step is bound by launching
them; a few long gaps mean the device waited for the host (data, a sync, a thread that did
not get the CPU). Comparing a slow window's trace with a fast one's says which grew.
"""

import argparse
import collections
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from profile_step import device_events  # noqa: E402

GAP_EDGES_US = (10.0, 100.0, 1000.0)  # < 10 us, 10-100 us, 0.1-1 ms, >= 1 ms


def union_and_gaps(intervals: list[tuple[float, float]]) -> tuple[float, list[float]]:
  """Total covered length of [start, end) intervals, and the gaps between covered stretches."""
  busy, gaps, cur = 0.0, [], None
  for a, b in sorted(intervals):
    if cur is None:
      cur = [a, b]
    elif a > cur[1]:
      busy += cur[1] - cur[0]
      gaps.append(a - cur[1])
      cur = [a, b]
    else:
      cur[1] = max(cur[1], b)
  if cur is not None:
    busy += cur[1] - cur[0]
  return busy, gaps


def summarize(events, steps: int = 0, top: int = 8) -> list[dict]:
  """One summary per device from (device, kernel name, hlo op, start ns, duration ns) events
  (profile_step.device_events): times in milliseconds, gap counts and totals by length."""
  by_device = collections.defaultdict(list)
  for device, name, _, start_ns, dur_ns in events:
    by_device[device].append((name, start_ns / 1e3, dur_ns / 1e3))  # microseconds
  out = []
  for device, kernels in sorted(by_device.items()):
    busy, gaps = union_and_gaps([(t, t + d) for _, t, d in kernels])
    span = max(t + d for _, t, d in kernels) - min(t for _, t, _ in kernels)
    edges = (0.0, *GAP_EDGES_US, float("inf"))
    by_length = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
      g = [x for x in gaps if lo <= x < hi]
      by_length.append({"from_us": lo, "to_us": hi, "count": len(g), "ms": sum(g) / 1e3})
    per_name = collections.Counter()
    for name, _, d in kernels:
      per_name[name] += d
    out.append(
      {
        "device": device,
        "span_ms": span / 1e3,
        "busy_ms": busy / 1e3,
        "busy_fraction": busy / span if span > 0 else 0.0,
        "kernels": len(kernels),
        "kernels_per_step": len(kernels) / steps if steps else None,
        "ms_per_step": span / 1e3 / steps if steps else None,
        "gaps": by_length,
        "longest_gaps_ms": [g / 1e3 for g in sorted(gaps, reverse=True)[:5]],
        "top_kernels_ms": [(k, v / 1e3) for k, v in per_name.most_common(top)],
      }
    )
  return out


def render(where: str, summaries: list[dict]) -> str:
  lines = [f"## {where}"]
  for s in summaries:
    per_step = (
      f"; {s['ms_per_step']:.2f} ms and {s['kernels_per_step']:.0f} kernels per step"
      if s["ms_per_step"]
      else ""
    )
    lines += [
      f"{s['device']}: span {s['span_ms']:.1f} ms, busy {s['busy_ms']:.1f} ms "
      f"({100 * s['busy_fraction']:.1f}%), {s['kernels']} kernels{per_step}",
      "",
      "| idle gap | count | total ms |",
      "| --- | --- | --- |",
    ]
    for g in s["gaps"]:
      hi = "" if g["to_us"] == float("inf") else f"{g['to_us']:g}"
      lines.append(f"| {g['from_us']:g}-{hi} us | {g['count']} | {g['ms']:.1f} |")
    lines += ["", "longest gaps (ms): " + ", ".join(f"{g:.2f}" for g in s["longest_gaps_ms"])]
    lines += ["top kernels (ms): " + "; ".join(f"{k[:60]} {v:.1f}" for k, v in s["top_kernels_ms"])]
  return "\n".join(lines)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    "trace_dirs", nargs="+", help="folders holding a trace (e.g. <workdir>/tensorboard)"
  )
  p.add_argument("--steps", type=int, default=0, help="train steps in each trace (per-step rates)")
  args = p.parse_args(argv)
  found = False
  for where in args.trace_dirs:
    if not glob.glob(os.path.join(where, "**", "*.xplane.pb"), recursive=True):
      raise SystemExit(f"{where}: no *.xplane.pb under it (train.trace_start writes one)")
    summaries = summarize(device_events(where), args.steps)
    found |= bool(summaries)
    print(render(where, summaries) if summaries else f"## {where}\nno GPU kernels", flush=True)
  if not found:
    raise SystemExit("no GPU kernels in any trace given (this reads GPU traces)")


if __name__ == "__main__":
  main()
