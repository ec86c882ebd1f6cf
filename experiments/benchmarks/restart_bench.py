"""Time to the first step of a fresh, a restarted and a resumed run (persistent compile cache).

Runs `python -m infonoise_jax.main` three times as separate processes with one compilation
cache folder (`system.compilation_cache_dir`; `--cache` must be empty or new):

1. **cold:** fresh workdir A, empty cache: compiles everything and fills the cache;
2. **restart:** fresh workdir B, same config: a new process that should read every program
   from the cache;
3. **resume:** workdir A again with twice the steps: restores A's checkpoint, then trains.

For each it reports the seconds from launching the process to the trainer's "First step"
log line (imports, data, building and restoring the state, compiling or loading the step, and
the step itself), the first step's own time as the trainer logs it, the whole process, and
how many files the cache gained (0 after the cold run = nothing compiled again).

  python experiments/benchmarks/restart_bench.py --config=configs/default.py:fashion --steps=20
  python experiments/benchmarks/restart_bench.py --config=configs/cifar10_infonoise.py \
      --steps=20 --mock_tfds=10000 --set model.dtype=bfloat16   # CIFAR-10 offline: random data
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIRST_STEP = re.compile(r"First step \(with compiling\) took ([0-9.]+) s")


def cache_files(folder: str) -> int:
  return sum(len(files) for _, _, files in os.walk(folder))


def launch(
  config: str,
  workdir: str,
  steps: int,
  cache: str,
  overrides,
  timeout: float,
  mock_tfds: int = 0,
  log_path: str = "",
) -> dict:
  """Runs one training process; returns its timings (seconds) parsed from its log (kept at
  `log_path`, each line prefixed with the seconds since launch, if given)."""
  mock = os.path.join(ROOT, "experiments", "benchmarks", "with_mock_tfds.py")
  runner = ["-m"] if not mock_tfds else [mock, f"--num_examples={mock_tfds}", "--"]
  cmd = [
    sys.executable,
    *runner,
    "infonoise_jax.main",
    f"--config={config}",
    f"--workdir={workdir}",
    f"--config.train.num_steps={steps}",
    f"--config.system.compilation_cache_dir={cache}",
    *[f"--config.{o}" for o in overrides],
  ]
  t0 = time.monotonic()
  first_step_at = first_step_s = None
  lines = []
  proc = subprocess.Popen(
    cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
  )
  # SIGKILL: the trainer takes SIGTERM as a preemption and would save first.
  watchdog = threading.Timer(timeout, proc.kill)
  watchdog.start()
  try:
    for line in proc.stdout:
      lines.append(f"{time.monotonic() - t0:8.2f} {line}")
      m = FIRST_STEP.search(line)
      if m and first_step_at is None:
        first_step_at, first_step_s = time.monotonic() - t0, float(m.group(1))
    rc = proc.wait()
  finally:
    watchdog.cancel()
  if log_path:
    with open(log_path, "w") as f:
      f.writelines(lines)
  if rc != 0 or first_step_at is None:
    sys.stdout.write("".join(lines[-40:]))
    raise SystemExit(f"run failed (rc {rc}): {' '.join(cmd)}")
  total = time.monotonic() - t0
  return {"to_first_step": first_step_at, "first_step": first_step_s, "total": total}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/default.py", help="config file[:variant]")
  p.add_argument("--steps", type=int, default=20, help="steps of the fresh runs (resume: 2x)")
  p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
  p.add_argument("--cache", default="", help="cache folder (default: a temporary one)")
  p.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
  p.add_argument("--mock_tfds", type=int, default=0, help="random TFDS data (with_mock_tfds.py)")
  p.add_argument("--keep", default="", help="keep the workdirs and logs under this folder")
  a = p.parse_args()
  base = a.keep or tempfile.mkdtemp(prefix="restart_bench_")
  if any(os.path.exists(os.path.join(base, d)) for d in ("a", "b")):
    raise SystemExit(f"--keep={base} holds workdirs a/ or b/ of an earlier run; use a new folder")
  os.makedirs(base, exist_ok=True)
  cache = a.cache or os.path.join(base, "xla")
  if os.path.isdir(cache) and os.listdir(cache):  # never empties a cache someone relies on
    raise SystemExit(f"--cache={cache} is not empty; the cold run needs an empty cache folder")
  os.makedirs(cache, exist_ok=True)
  overrides = ["train.sample_every=0", "train.fid_every=0", *a.set]  # grids, FID: end only, off
  runs = [
    ("cold (fresh workdir, empty cache)", os.path.join(base, "a"), a.steps),
    ("restart (fresh workdir, cache)", os.path.join(base, "b"), a.steps),
    ("resume (workdir of the cold run, cache)", os.path.join(base, "a"), 2 * a.steps),
  ]
  rows = []
  for i, (name, workdir, steps) in enumerate(runs):
    before = cache_files(cache)
    log_path = os.path.join(base, f"{i}_{name.split()[0]}.log") if a.keep else ""
    r = launch(a.config, workdir, steps, cache, overrides, a.timeout, a.mock_tfds, log_path)
    rows.append((name, r, cache_files(cache) - before))
    print(f"{name}: {r}", flush=True)
  import jax  # after the runs: the benchmark process itself holds no device while they run

  print(f"\n{jax.devices()[0].device_kind}, jax {jax.__version__}, {a.config} {' '.join(a.set)}")
  print("| run | launch to first step s | first step s (log) | process s | new cache files |")
  print("| --- | --- | --- | --- | --- |")
  for name, r, new in rows:
    print(
      f"| {name} | {r['to_first_step']:.1f} | {r['first_step']:.1f} | {r['total']:.1f} | {new} |"
    )
  if not a.keep:
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
  main()
