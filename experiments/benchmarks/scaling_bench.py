"""How cost grows: train-step time and memory against batch size and resolution, and the
InfoNoise estimator's cost against its number of bins and the batch (issue 13, item 5).

  python experiments/benchmarks/scaling_bench.py                        # GPU: the three tables
  python experiments/benchmarks/scaling_bench.py --config=configs/cifar10_infonoise.py \\
      --shape=32,32,3 --dtype=bfloat16 --batches 128 256 512 --resolutions 28 32 64
  python experiments/benchmarks/scaling_bench.py --batches 4 8 16 --resolutions 8 16 32 \\
      --resolution_batch=4 --bins 16 64 --estimator_batches 256 1024 --iters 2 --shape=8,8,1 \\
      --set model.channel_mult='(1,2)' model.attn_resolutions='(4,)'        # a tiny CPU check

1. **Step vs batch:** the real train step of `--config` (`train_step_bench.build`: schedule,
   EDM loss, Adam, EMA, batch sharded over the local devices) on synthetic data of `--shape`,
   for each of `--batches`, timed as `train_step_bench.bench` does (steps dispatched back to
   back; median of 5 rounds of `--iters`; compile left out).
2. **Step vs resolution:** the same at batch `--resolution_batch` for square images of each
   side in `--resolutions` (channels from `--shape`). The resolution is the data shape the
   U-Net is built for (the trainer builds it from its data the same way; `data.image_size`
   can only shrink a dataset by an integer factor, so synthetic images stand in). Attention
   stays at the same place in the network: each of `model.attn_resolutions` is scaled by
   side / native side (fashion: 7 at 28, 8 at 32, 16 at 64).
3. **InfoNoise estimator vs bins and batch:** `InfoNoise.update` alone (record the batch's
   errors into K bins, refresh select), jitted: one call (with its dispatch, as
   `schedule_bench.py` times it) and per update inside a 100-update `lax.scan` (its cost
   inside a train step).

Memory: each step point runs in a process of its own, so `memory_stats()`'s
`peak_bytes_in_use` (a peak over the process's life) belongs to that point alone; a backend
without memory stats (CPU) prints n/a. XLA's plan for the compiled step (arguments +
outputs + temporaries - donated buffers, per device) is printed beside it on every backend.
"""

import argparse
import json
import os
import subprocess
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import numpy as np

SCAN_UPDATES = 100


# ------------------------------------------------------------------------------ step points


def scaled_attention(attn: tuple[int, ...], native: int, side: int) -> tuple[int, ...]:
  """`attn` resolutions (pixels at native side `native`) moved to the same network levels
  for images of side `side`."""
  out = []
  for a in attn:
    if (a * side) % native:
      raise ValueError(f"attention at {a} px of {native} has no level at side {side}")
    out.append(a * side // native)
  return tuple(out)


def step_point(point: dict) -> dict:
  """One train-step measurement (run in its own process by `run_point`)."""
  import train_step_bench

  config = train_step_bench.config_for(
    point["config"], point["dtype"], point["batch"], point["set"]
  )
  shape = tuple(point["shape"])
  native = point["native"]
  if config.model.name == "unet" and shape[0] != native:
    config.model.attn_resolutions = scaled_attention(
      tuple(config.model.attn_resolutions), native, shape[0]
    )
  r = train_step_bench.bench(config, shape, point["iters"])
  return {k: r[k] for k in ("step_ms", "images_per_s", "peak_mem_gib", "xla_plan_gib", "mfu_text")}


def run_point(point: dict) -> dict:
  """`step_point(point)` in a fresh process: its peak memory is its own. Errors (e.g. out of
  memory at the largest points) come back as {'error': last line}."""
  cmd = [sys.executable, os.path.abspath(__file__), "--point", json.dumps(point)]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
  return {"error": tail[:160]}


def _gib(x: float) -> str:
  return "n/a" if x is None or not np.isfinite(x) else f"{x:.2f}"


def step_table(title: str, label: str, points: list[tuple[str, dict]]) -> None:
  print(f"\n**{title}**\n")
  print(f"| {label} | step ms | images/s | peak device GiB | XLA plan GiB | MFU |")
  print("| --- | --- | --- | --- | --- | --- |")
  for value, point in points:
    r = run_point(point)
    if "error" in r:
      print(f"| {value} | failed: {r['error']} | | | | |", flush=True)
      continue
    print(
      f"| {value} | {r['step_ms']:.2f} | {r['images_per_s']:,.0f} | {_gib(r['peak_mem_gib'])} | "
      f"{_gib(r['xla_plan_gib'])} | {r['mfu_text']} |",
      flush=True,
    )


# ------------------------------------------------------------------------------ estimator


def estimator_point(num_bins: int, batch: int, iters: int) -> dict[str, float]:
  """InfoNoise.update alone: microseconds per jitted call and per update inside a scan."""
  from schedule_bench import _median_us

  from infonoise_jax import profiles
  from infonoise_jax.schedules.infonoise import InfoNoise

  sched = InfoNoise(num_bins=num_bins, refresh_every=10, warmup_steps=10)
  state = sched.init_state()
  keys = jax.random.split(jax.random.key(0), SCAN_UPDATES)
  sigma_TB = jax.vmap(lambda k: sched.sample(state, k, batch)[0])(keys)
  err_TB = profiles.gaussian_mmse(sigma_TB, 0.5)  # Bayes errors of N(0, 0.25) data

  update = jax.jit(lambda st, s, e: sched.update(st, s, e, e)[0])

  @jax.jit
  def scanned(st, s_TB, e_TB):
    return jax.lax.scan(
      lambda c, se: (sched.update(c, se[0], se[1], se[1])[0], None), st, (s_TB, e_TB)
    )[0]

  state = scanned(state, sigma_TB, err_TB)  # past the first refreshes
  return {
    "call": _median_us(update, (state, sigma_TB[0], err_TB[0]), iters),
    "fused": _median_us(scanned, (state, sigma_TB, err_TB), max(iters // 10, 5)) / SCAN_UPDATES,
  }


def estimator_table(bins: list[int], batches: list[int], iters: int) -> None:
  print(
    "\n**InfoNoise estimator update vs bins K and global batch** (us; one jitted call "
    f"including dispatch / per update inside a {SCAN_UPDATES}-update scan)\n"
  )
  print("| K | " + " | ".join(f"batch {b}" for b in batches) + " |")
  print("| --- |" + " --- |" * len(batches))
  for k in bins:
    cells = []
    for b in batches:
      r = estimator_point(k, b, iters)
      cells.append(f"{r['call']:.1f} / {r['fused']:.2f}")
    print(f"| {k} | " + " | ".join(cells) + " |", flush=True)


# ------------------------------------------------------------------------------ main


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/default.py:fashion", help="path[:variant]")
  p.add_argument("--shape", default="28,28,1", help="native per-example shape H,W,C")
  p.add_argument("--dtype", default="float32", help="model.dtype: float32 | bfloat16")
  p.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
  p.add_argument("--resolutions", type=int, nargs="+", default=[28, 32, 64])
  p.add_argument("--resolution_batch", type=int, default=256)
  p.add_argument("--bins", type=int, nargs="+", default=[32, 64, 128, 256, 512])
  p.add_argument("--estimator_batches", type=int, nargs="+", default=[256, 1024, 4096, 16384])
  p.add_argument("--iters", type=int, default=20, help="steps per timing round")
  p.add_argument("--estimator_iters", type=int, default=200)
  p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
  p.add_argument("--skip", nargs="*", default=[], choices=["batch", "resolution", "estimator"])
  p.add_argument("--point", default="", help=argparse.SUPPRESS)  # internal: one step point
  args = p.parse_args()
  if args.point:
    print(json.dumps(step_point(json.loads(args.point))), flush=True)
    return

  shape = [int(s) for s in args.shape.split(",")]
  dev = jax.devices()[0]
  print(
    f"{jax.device_count()} x {dev.device_kind}, jax {jax.__version__}, config {args.config} "
    f"{' '.join(args.set)}, {args.dtype}, {time.strftime('%Y-%m-%d')}"
  )
  base = dict(config=args.config, dtype=args.dtype, set=args.set, iters=args.iters, native=shape[0])
  if "batch" not in args.skip:
    points = [(b, {**base, "batch": b, "shape": shape}) for b in args.batches]
    step_table(f"Train step vs global batch ({'x'.join(map(str, shape))})", "batch", points)
  if "resolution" not in args.skip:
    points = [
      (f"{r}x{r}", {**base, "batch": args.resolution_batch, "shape": [r, r, shape[-1]]})
      for r in args.resolutions
    ]
    step_table(f"Train step vs resolution (batch {args.resolution_batch})", "side", points)
  if "estimator" not in args.skip:
    estimator_table(args.bins, args.estimator_batches, args.estimator_iters)


if __name__ == "__main__":
  main()
