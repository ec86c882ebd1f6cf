"""Per-thread CPU of a running command, and the host's CPU steal, sampled from /proc (Linux).

  python experiments/benchmarks/thread_cpu.py run --out=cpu.jsonl -- \\
      python experiments/benchmarks/trainer_bench.py --config=configs/default.py:fashion
  python experiments/benchmarks/thread_cpu.py summarize cpu.jsonl --every=3

`run` starts the command, samples `/proc/stat` and `/proc/<pid>/task/*/stat` every
`--interval` seconds until it exits (one JSON line per sample) and exits with its status.
`summarize` prints, per `--every` seconds: the command's main thread (its user and system CPU,
in % of one core), all its other threads together, and the host's steal and idle (in % of all
cores). It answers "is the loop's thread saturated, is anything else in the process busy, and is
the machine contended" for a throughput benchmark (BENCHMARKS.md, issue 13 item 2); a separate
process, so it adds nothing to the measured one but one core's light polling.
"""

import argparse
import json
import os
import subprocess
import sys
import time

# /proc/stat's first line: user nice system idle iowait irq softirq steal ...
STEAL, IDLE = 7, 3


def parse_task_stat(text: str) -> tuple[str, int, int]:
  """(name, utime, stime) in clock ticks from one /proc/<pid>/task/<tid>/stat line (the name
  sits in parentheses and may hold spaces or parentheses itself)."""
  head, _, rest = text.rpartition(")")
  name = head.partition("(")[2]
  fields = rest.split()  # fields 3.. of proc(5): state is fields[0], utime field 14
  return name, int(fields[11]), int(fields[12])


def sample(pid: int) -> dict:
  with open("/proc/stat") as f:
    cpu = [int(v) for v in f.readline().split()[1:]]
  threads = {}
  task_dir = f"/proc/{pid}/task"
  for tid in os.listdir(task_dir):
    try:
      with open(f"{task_dir}/{tid}/stat") as f:
        threads[tid] = parse_task_stat(f.read())
    except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
      continue
  return {"t": time.time(), "cpu": cpu, "threads": threads}


def record(pid: int, out, interval: float, alive) -> None:
  while alive():
    try:
      s = sample(pid)
    except FileNotFoundError:  # the process ended between the check and the read
      break
    s["pid"] = pid
    out.write(json.dumps(s) + "\n")
    out.flush()
    time.sleep(interval)


def summarize(samples: list[dict], every: float, ticks_per_s: float) -> list[dict]:
  """One row per `every` seconds: main thread user / system % of a core, the other threads' %
  of a core (summed), host steal and idle % of all cores. Threads that appear or end between
  two samples count from 0 / are left out."""
  rows, prev = [], None
  for s in samples:
    if prev is not None and s["t"] - prev["t"] < every:
      continue
    if prev is not None:
      dt = s["t"] - prev["t"]
      main = str(s["pid"])
      pct = 100.0 / ticks_per_s / dt  # % of one core per tick
      cur_main, old_main = s["threads"].get(main), prev["threads"].get(main)
      user = sys_ = 0.0
      if cur_main and old_main:
        user, sys_ = (cur_main[1] - old_main[1]) * pct, (cur_main[2] - old_main[2]) * pct
      others = 0
      for tid, (_, u, k) in s["threads"].items():
        if tid == main:
          continue
        _, u0, k0 = prev["threads"].get(tid, ("", 0, 0))
        others += (u - u0) + (k - k0)
      d = [a - b for a, b in zip(s["cpu"], prev["cpu"], strict=False)]
      total = sum(d) or 1
      rows.append(
        {
          "t": s["t"] - samples[0]["t"],
          "main_user": user,
          "main_sys": sys_,
          "others": others * pct,
          "steal": 100.0 * d[STEAL] / total,
          "idle": 100.0 * d[IDLE] / total,
          "threads": len(s["threads"]),
        }
      )
    prev = s
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="mode", required=True)
  r = sub.add_parser("run", help="run a command and record its threads' CPU")
  r.add_argument("--out", required=True, help="JSON lines, one per sample")
  r.add_argument("--interval", type=float, default=0.5)
  r.add_argument("command", nargs=argparse.REMAINDER, help="-- command ...")
  s = sub.add_parser("summarize", help="a table of a recording")
  s.add_argument("path")
  s.add_argument("--every", type=float, default=3.0, help="seconds per row")
  args = p.parse_args()
  if args.mode == "summarize":
    with open(args.path) as f:
      samples = [json.loads(line) for line in f if line.strip()]
    rows = summarize(samples, args.every, os.sysconf("SC_CLK_TCK"))
    print("| s | main thread user % | main thread system % | other threads % | steal % | idle % |")
    print("| --- | --- | --- | --- | --- | --- |")
    for w in rows:
      print(
        f"| {w['t']:.1f} | {w['main_user']:.0f} | {w['main_sys']:.0f} | {w['others']:.0f} | "
        f"{w['steal']:.1f} | {w['idle']:.1f} |"
      )
    return
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    sys.exit("thread_cpu.py run: give the command to run after --")
  if not os.path.exists("/proc/stat"):
    sys.exit("thread_cpu.py reads /proc: it needs Linux")
  proc = subprocess.Popen(command)
  with open(args.out, "w") as out:
    record(proc.pid, out, args.interval, lambda: proc.poll() is None)
  sys.exit(proc.wait())


if __name__ == "__main__":
  main()
