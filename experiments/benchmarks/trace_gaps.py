"""Where a traced stretch of training spent the device's time: busy, idle, and in what gaps.

Reads the JSON copy of a device trace (`<host>.trace.json.gz`, written beside the TensorBoard
profile by `--config.train.trace_start=N --config.train.trace_steps=M`; a Perfetto export of
the same trace works too) and prints, per device: the span from its first to its last kernel,
the time some kernel ran (the union over its streams), the idle rest, the number of kernels
(per step with --steps), the idle gaps by length, and the kernels that took the most time.
Only the device's stream lines count (GPU `Stream #...`, TPU `XLA Ops`): summary lines such as
`XLA Modules` or `Steps` span many kernels and would count their time again.

  python experiments/benchmarks/trace_gaps.py --steps=30 \
      <workdir>/tensorboard/plugins/profile/*/*.trace.json.gz

The trainer starts its trace on an idle device, so the span holds the traced steps only.
Many short gaps (microseconds) between many short kernels mean the step is bound by launching
them; a few long gaps mean the device waited for the host (data, a sync, a thread that did
not get the CPU). Comparing a slow window's trace with a fast one's says which grew.
"""

import argparse
import collections
import gzip
import json

GAP_EDGES_US = (10.0, 100.0, 1000.0)  # < 10 us, 10-100 us, 0.1-1 ms, >= 1 ms


def load_events(path: str) -> list[dict]:
  with open(path, "rb") as f:
    raw = f.read()
  data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
  return data["traceEvents"] if isinstance(data, dict) else data


STREAM_LINES = ("Stream #", "XLA Ops")  # per-kernel lines of GPU / TPU device planes


def device_pids(events: list[dict]) -> dict[int, str]:
  """pid -> name of every process named like a device (/device:GPU:0, /device:TPU:1, ...)."""
  return {
    e["pid"]: e["args"]["name"]
    for e in events
    if e.get("ph") == "M" and e.get("name") == "process_name"
    if str(e.get("args", {}).get("name", "")).startswith("/device:")
  }


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


def kernel_lines(events: list[dict], pid: int) -> dict[int, str]:
  """tid -> name of the device's per-kernel lines (streams); every named line when none is
  named like one (an unknown device), and {} when the trace names no lines at all."""
  named = {
    e["tid"]: str(e.get("args", {}).get("name", ""))
    for e in events
    if e.get("ph") == "M" and e.get("name") == "thread_name" and e.get("pid") == pid
  }
  streams = {t: n for t, n in named.items() if n.startswith(STREAM_LINES)}
  return streams or named


def summarize(events: list[dict], steps: int = 0, top: int = 8) -> list[dict]:
  """One summary per device: times in milliseconds, gap counts and totals by length."""
  out = []
  for pid, name in sorted(device_pids(events).items()):
    lines = kernel_lines(events, pid)
    kernels = [
      e
      for e in events
      if e.get("ph") == "X" and e.get("pid") == pid and (not lines or e.get("tid") in lines)
    ]
    if not kernels:
      continue
    spans = [(float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))) for e in kernels]
    busy, gaps = union_and_gaps(spans)
    span = max(b for _, b in spans) - min(a for a, _ in spans)
    edges = (0.0, *GAP_EDGES_US, float("inf"))
    by_length = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
      g = [x for x in gaps if lo <= x < hi]
      by_length.append({"from_us": lo, "to_us": hi, "count": len(g), "ms": sum(g) / 1e3})
    per_name = collections.Counter()
    for e in kernels:
      per_name[e["name"]] += float(e.get("dur", 0))
    out.append(
      {
        "device": name,
        "lines": sorted(set(lines.values())) if lines else ["(all)"],
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


def render(path: str, summaries: list[dict]) -> str:
  lines = [f"## {path}"]
  for s in summaries:
    per_step = (
      f"; {s['ms_per_step']:.2f} ms and {s['kernels_per_step']:.0f} kernels per step"
      if s["ms_per_step"]
      else ""
    )
    lines += [
      f"{s['device']}: span {s['span_ms']:.1f} ms, busy {s['busy_ms']:.1f} ms "
      f"({100 * s['busy_fraction']:.1f}%), {s['kernels']} kernels{per_step}",
      f"lines counted: {', '.join(s['lines'])}",
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
  p.add_argument("traces", nargs="+", help="*.trace.json.gz files (or Perfetto exports)")
  p.add_argument("--steps", type=int, default=0, help="train steps in each trace (per-step rates)")
  args = p.parse_args(argv)
  empty = []
  for path in args.traces:
    summaries = summarize(load_events(path), args.steps)
    if summaries:
      print(render(path, summaries), flush=True)
    else:
      empty.append(path)
      print(f"## {path}\nno device kernels in this trace (a CPU-only run has none)", flush=True)
  if len(empty) == len(args.traces):
    raise SystemExit("no device kernels in any trace given")


if __name__ == "__main__":
  main()
