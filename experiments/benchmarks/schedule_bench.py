"""Cost of the InfoNoise estimator inside a train step: jitted sample, update and both.

For K in {64, 256} bins and global batch in {512, 4096} it times, on whatever backend is present,
the median wall time of one call (after warm-up, `block_until_ready` each call) of
`sample`, `update` and `sample + update`, and the per-step time of 100 fused steps in one
`lax.scan` (no dispatch overhead: the cost the estimator adds to a real jitted train step).
Errors are the Bayes errors of Gaussian data, so refreshes see realistic values; with
refresh_every = 10 the refresh branch runs often (it is a select, so every step pays for it).

  python experiments/benchmarks/schedule_bench.py [--iters 200] [--bins 64 256]
  python -m experiments.benchmarks.schedule_bench --batches 512 4096

Prints a markdown table.
"""

import argparse
import os
import statistics
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax
import jax.numpy as jnp

from infonoise_jax import profiles
from infonoise_jax.schedules.infonoise import InfoNoise

SCAN_STEPS = 100


def _median_us(fn, args, iters: int) -> float:
  for _ in range(5):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return 1e6 * statistics.median(times)


def _functions(sched: InfoNoise, batch: int):
  def sample(state, key):
    return sched.sample(state, key, batch)

  def update(state, sigma_B, err_B):
    return sched.update(state, sigma_B, err_B, err_B)

  def step_fn(state, key):
    sigma_B, _ = sched.sample(state, key, batch)
    err_B = profiles.gaussian_mmse(sigma_B, 0.5)  # Bayes error of N(0, 0.25) data (per dim)
    return sched.update(state, sigma_B, err_B, err_B)

  def scan_fn(state, key):
    def body(st, i):
      return step_fn(st, jax.random.fold_in(key, i))[0], None

    return jax.lax.scan(body, state, jnp.arange(SCAN_STEPS))[0]

  return jax.jit(sample), jax.jit(update), jax.jit(step_fn), jax.jit(scan_fn)


def bench(num_bins: int, batch: int, iters: int) -> dict[str, float]:
  sched = InfoNoise(num_bins=num_bins, refresh_every=10, warmup_steps=10)
  sample, update, step_fn, scan_fn = _functions(sched, batch)
  key = jax.random.key(0)
  state = sched.init_state()
  state = scan_fn(state, key)  # past the first refresh: sample from the table
  sigma_B, _ = sample(state, key)
  err_B = profiles.gaussian_mmse(sigma_B, 0.5)
  return {  # every update computes the refresh (a select keeps it or not)
    "sample": _median_us(sample, (state, key), iters),
    "update": _median_us(update, (state, sigma_B, err_B), iters),
    "sample+update": _median_us(step_fn, (state, key), iters),
    "fused/step": _median_us(scan_fn, (state, key), max(iters // 10, 5)) / SCAN_STEPS,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--iters", type=int, default=200)
  parser.add_argument("--bins", type=int, nargs="+", default=[64, 256])
  parser.add_argument("--batches", type=int, nargs="+", default=[512, 4096])
  args = parser.parse_args()
  dev = jax.devices()[0]
  print(f"backend {jax.default_backend()}, device {dev.device_kind}, jax {jax.__version__}")
  print(f"median of {args.iters} calls after warm-up; fused = {SCAN_STEPS} steps in one scan\n")
  cols = ["sample", "update", "sample+update", "fused/step"]
  print("| K | batch | " + " | ".join(f"{c} (us)" for c in cols) + " |")
  print("| --- | --- |" + " --- |" * len(cols))
  for k in args.bins:
    for b in args.batches:
      r = bench(k, b, args.iters)
      print(f"| {k} | {b} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + " |", flush=True)


if __name__ == "__main__":
  main()
