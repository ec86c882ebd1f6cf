"""Throughput of the real train step (steps.make_train_step) for a config, fp32 and bf16.

Builds exactly the step the trainer runs (schedule sample + update, EDM loss, Adam, EMA)
from a config file, on synthetic data of the config's image shape (no dataset needed),
with the batch sharded over all local devices. Reports compile time, median step time,
images/s, peak device memory, XLA's FLOP count per step and model FLOPs utilization.

  python experiments/benchmarks/train_step_bench.py --config=configs/cifar10_infonoise.py \
      --dtypes=float32,bfloat16 --iters=30
  python experiments/benchmarks/train_step_bench.py --config=configs/cifar10_edm.py:ncsnpp

FLOPs come from XLA's cost analysis of the step lowered for CPU; on the GPU machine (jax
0.11.2) that count came back empty, so run the script once on CPU with a small
`--batch_size` and scale per image (BENCHMARKS.md does this).
MFU uses the card's dense peak: H100/H200 SXM 989 TFLOP/s for bf16 and 495 TFLOP/s for
TF32 (JAX's default fp32 matmul precision on Hopper is TF32-like).
"""

import argparse
import os
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from infonoise_jax import steps
from infonoise_jax.models import make_model, param_count
from infonoise_jax.schedules import make_schedule
from infonoise_jax.train_state import make_optimizer
from infonoise_jax.validation import load_config_file

PEAK_TFLOPS = {"bfloat16": 989.0, "float32": 495.0}  # Hopper dense (SXM)


def step_flops(step, state, x) -> float:
  """XLA's FLOP count of the step, from the same program lowered for CPU.

  On GPU the compiled module's cost analysis misses convolutions that become cuDNN custom
  calls, and the GPU lowering reports none; the CPU lowering counts every convolution.
  """
  try:
    cost = step.trace(state, x).lower(lowering_platforms=("cpu",)).cost_analysis()
  except Exception as e:  # noqa: BLE001 - a benchmark reports what it can
    print(f"no FLOP count: {e}")
    return float("nan")
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def config_for(config_arg: str, dtype: str, batch_size: int = 0):
  """The config of `path[:variant]` with compute dtype `dtype` and, if nonzero, `batch_size`."""
  path, _, variant = config_arg.partition(":")
  config = load_config_file(path, variant or None)
  config.model.dtype = dtype
  if batch_size:
    config.train.batch_size = batch_size
  return config


def build(config, shape):
  """The jitted train step, a replicated initial state and a sharded synthetic batch."""
  model, schedule = make_model(config, shape), make_schedule(config)
  optimizer = make_optimizer(config)
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  init = lambda: steps.init_state(model, schedule, optimizer, shape, config.seed)
  state_sh = jax.tree.map(lambda _: rep, jax.eval_shape(init))
  state = jax.jit(init, out_shardings=state_sh)()
  step = jax.jit(
    steps.make_train_step(config, model, schedule, optimizer),
    in_shardings=(state_sh, data),
    out_shardings=(state_sh, rep),
    donate_argnums=0,
  )
  x = jax.device_put(
    jax.random.uniform(jax.random.key(0), (config.train.batch_size, *shape), minval=-1, maxval=1),
    data,
  )
  return step, state, x


def bench(config, shape, iters: int) -> dict:
  step, state, x = build(config, shape)
  t0 = time.perf_counter()
  compiled = step.lower(state, x).compile()
  compile_s = time.perf_counter() - t0
  # The CPU lowering of the whole step takes about a minute beside a GPU: count on CPU only.
  flops = step_flops(step, state, x) if jax.default_backend() == "cpu" else float("nan")
  for _ in range(3):  # warm-up
    state, m = compiled(state, x)
  jax.block_until_ready(state)
  synced = []  # one step at a time, waiting for each (includes dispatch latency)
  for _ in range(iters):
    t = time.perf_counter()
    state, m = compiled(state, x)
    jax.block_until_ready(m["loss"])
    synced.append(time.perf_counter() - t)
  pipelined = []  # steps dispatched back to back, as the trainer runs them
  for _ in range(5):
    t = time.perf_counter()
    for _ in range(iters):
      state, m = compiled(state, x)
    jax.block_until_ready(state)
    pipelined.append((time.perf_counter() - t) / iters)
  dt = float(np.median(pipelined))
  stats = jax.local_devices()[0].memory_stats() or {}
  peak_tflops = PEAK_TFLOPS[config.model.dtype] * jax.device_count()
  return {
    "compile_s": compile_s,
    "step_ms": dt * 1e3,
    "synced_ms": float(np.median(synced)) * 1e3,
    "images_per_s": config.train.batch_size / dt,
    "peak_mem_gib": stats.get("peak_bytes_in_use", float("nan")) / 2**30,
    "tflop_per_step": flops / 1e12,
    "mfu": flops / dt / (peak_tflops * 1e12),
    "loss_finite": bool(jnp.isfinite(m["loss"])),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    "--config", default="configs/cifar10_infonoise.py", help="path[:variant], e.g. ...:ncsnpp"
  )
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--batch_size", type=int, default=0, help="0 = the config's")
  p.add_argument("--iters", type=int, default=30)
  p.add_argument("--shape", default="32,32,3", help="per-example data shape")
  args = p.parse_args()
  shape = tuple(int(s) for s in args.shape.split(","))
  dev = jax.devices()[0]
  print(f"{jax.device_count()} x {dev.device_kind}, jax {jax.__version__}, config {args.config}")
  print(
    "| dtype | batch | params | compile s | step ms | synced step ms | images/s | peak GiB "
    "| TFLOP/step | MFU |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  for dtype in args.dtypes.split(","):
    config = config_for(args.config, dtype, args.batch_size)
    r = bench(config, shape, args.iters)
    n = param_count(make_model(config, shape), shape)
    print(
      f"| {dtype} | {config.train.batch_size} | {n:,} | {r['compile_s']:.1f} | "
      f"{r['step_ms']:.1f} | {r['synced_ms']:.1f} | "
      f"{r['images_per_s']:.0f} | {r['peak_mem_gib']:.1f} | {r['tflop_per_step']:.2f} | "
      f"{100 * r['mfu']:.1f}% |",
      flush=True,
    )


if __name__ == "__main__":
  main()
