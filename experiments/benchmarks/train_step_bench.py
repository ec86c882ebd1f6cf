"""Throughput of the real train step (steps.make_train_step) for a config, fp32 and bf16.

Builds exactly the step the trainer runs (schedule sample + update, EDM loss, Adam, EMA)
from a config file, on synthetic data of the config's image shape (no dataset needed),
with the batch sharded over all local devices. Reports compile time, median step time,
images/s, peak device memory, XLA's FLOP count per step and model FLOPs utilization.

  python experiments/benchmarks/train_step_bench.py --config=configs/cifar10_infonoise.py \
      --dtypes=float32,bfloat16 --iters=30
  python experiments/benchmarks/train_step_bench.py --config=configs/cifar10_edm.py:ncsnpp
  python experiments/benchmarks/train_step_bench.py --config=configs/dna.py --shape=128,4
  python experiments/benchmarks/train_step_bench.py --config=configs/default.py:fashion \
      --shape=28,28,1 --dtypes=float32 --optimizers=leafwise,flat   # the launch-bound A/B

FLOPs per step and MFU come from `infonoise_jax.flops` on whatever backend runs the script:
XLA's cost analysis of the compiled step, unless it counts less than the step's matrix
products and convolutions (jaxpr count), then that count. MFU divides by the device's
dense peak for the compute dtype (flops.PEAKS: H100/H200 SXM 989 TFLOP/s bf16 and 495
TF32, A100, TPUs; `--set system.peak_tflops=...` for any other device) and prints
"n/a (unknown peak ...)" rather than a number when the device is not in the table.
"HLO kernels" counts the compiled step's device work (`hlo_kernels`); `--optimizers=leafwise,flat`
times the same step with the optimizer leaf by leaf and over one concatenated vector (`build`;
by default the config's optim.flat_update decides).
"""

import argparse
import os
import re
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from infonoise_jax import flops, steps
from infonoise_jax.data.sources import TOKEN_NAMES, resolve_sigma_data
from infonoise_jax.data.tokens import TokenEncoding
from infonoise_jax.models import make_model, param_count
from infonoise_jax.schedules import make_schedule
from infonoise_jax.train_state import make_optimizer
from infonoise_jax.validation import load_config_file, parse_overrides


def config_for(config_arg: str, dtype: str, batch_size: int = 0, overrides=()):
  """The config of `path[:variant]` with `--set key=value` overrides, compute dtype `dtype`
  and, if nonzero, `batch_size`."""
  path, _, variant = config_arg.partition(":")
  config = load_config_file(path, variant or None)
  config.update_from_flattened_dict(parse_overrides(overrides))
  config.model.dtype = dtype
  if batch_size:
    config.train.batch_size = batch_size
  return config


def resolve_token_sigma_data(config, shape) -> None:
  """edm.sigma_data = 0 (follow the token encoding), which the trainer resolves from its data:
  here, without data, from a stand-in vocabulary of shape[-1] symbols (only its size and the
  one-hot scale matter, data/tokens.py)."""
  encoding = None
  if config.data.name in TOKEN_NAMES:
    encoding = TokenEncoding("".join(map(chr, range(256, 256 + shape[-1]))), config.data.scale)
  resolve_sigma_data(config, encoding, how_to_set="--set edm.sigma_data=<std>")


OPTIMIZERS = ("leafwise", "flat")


def layout_of(config) -> str:
  """The optimizer layout a config trains with (optim.flat_update)."""
  return "flat" if config.optim.flat_update else "leafwise"


def build(config, shape, optimizer_layout: str | None = None):
  """The jitted train step, a replicated initial state and a sharded synthetic batch (a token
  config's sigma_data resolved first: `resolve_token_sigma_data`). `optimizer_layout`: the
  trainer's optimizer updating all leaves concatenated into one vector (flat) or leaf by leaf
  (leafwise), set into `config` as optim.flat_update; None: as the config says."""
  if optimizer_layout is None:
    optimizer_layout = layout_of(config)
  if optimizer_layout not in OPTIMIZERS:
    raise ValueError(f"optimizer layout {optimizer_layout!r}: one of {', '.join(OPTIMIZERS)}")
  resolve_token_sigma_data(config, shape)
  config.optim.flat_update = optimizer_layout == "flat"
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


# Instructions of an optimized HLO module that do no device work of their own.
NOT_KERNELS = frozenset(
  ("parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "opt-barrier")
)


def hlo_kernels(hlo_text: str) -> int:
  """Instructions of the optimized module's entry computation that run as device work
  (fusions, library calls, copies, collectives): about the kernels one step launches, except
  that on a GPU a command buffer (a CUDA graph XLA built from several of them) counts once."""
  entry = hlo_text[hlo_text.index("\nENTRY ") + 1 :]
  body = entry[entry.index("{") + 1 : entry.index("\n}")]
  ops = re.findall(r"=\s*[^=]*?\s([a-z][\w-]*)\(", body)
  return sum(op not in NOT_KERNELS for op in ops)


def bench(config, shape, iters: int, optimizer_layout: str | None = None) -> dict:
  step, state, x = build(config, shape, optimizer_layout)
  t0 = time.perf_counter()
  compiled = step.lower(state, x).compile()
  compile_s = time.perf_counter() - t0
  kernels = hlo_kernels(compiled.as_text())
  count = flops.step_flops(step.trace(state, x).jaxpr, compiled, jax.device_count())
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
  plan = compiled.memory_analysis()  # XLA's buffers for one step, per device
  plan_bytes = (
    plan.argument_size_in_bytes
    + plan.output_size_in_bytes
    + plan.temp_size_in_bytes
    - plan.alias_size_in_bytes
    if plan is not None
    else float("nan")
  )
  kind, peak = flops.device_peak(config)
  mfu = flops.mfu(count.flops, 1 / dt, peak, jax.device_count())
  return {
    "compile_s": compile_s,
    "step_ms": dt * 1e3,
    "synced_ms": float(np.median(synced)) * 1e3,
    "images_per_s": config.train.batch_size / dt,
    "peak_mem_gib": stats.get("peak_bytes_in_use", float("nan")) / 2**30,
    "xla_plan_gib": plan_bytes / 2**30,  # arguments + outputs + temporaries - donated
    "tflop_per_step": count.flops / 1e12,
    "flops_source": count.source,
    "peak_tflops": peak,
    "mfu": mfu,
    "mfu_text": flops.describe_mfu(mfu, kind),
    "loss_finite": bool(jnp.isfinite(m["loss"])),
    "hlo_kernels": kernels,
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
  p.add_argument(
    "--optimizers",
    default="",
    help="comma list of optimizer layouts to time: leafwise and/or flat (all leaves as one "
    "vector); default: the config's (optim.flat_update)",
  )
  p.add_argument(
    "--set",
    nargs="*",
    default=[],
    help="config overrides key=value, e.g. "
    "system.peak_tflops=989 for a device not in infonoise_jax/flops.py's table",
  )
  args = p.parse_args()
  layouts = args.optimizers.split(",") if args.optimizers else [None]
  bad = [o for o in layouts if o is not None and o not in OPTIMIZERS]
  if bad:
    p.error(f"--optimizers: unknown {', '.join(bad)}; known: {', '.join(OPTIMIZERS)}")
  shape = tuple(int(s) for s in args.shape.split(","))
  dev = jax.devices()[0]
  print(f"{jax.device_count()} x {dev.device_kind}, jax {jax.__version__}, config {args.config}")
  print(
    "| dtype | optimizer | batch | params | compile s | step ms | synced step ms | images/s "
    "| peak GiB | TFLOP/step | MFU | HLO kernels |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for dtype in args.dtypes.split(","):
    for layout in layouts:
      config = config_for(args.config, dtype, args.batch_size, args.set)
      layout = layout or layout_of(config)
      r = bench(config, shape, args.iters, layout)
      n = param_count(make_model(config, shape), shape)
      print(
        f"| {dtype} | {layout} | {config.train.batch_size} | {n:,} | {r['compile_s']:.1f} | "
        f"{r['step_ms']:.1f} | {r['synced_ms']:.1f} | "
        f"{r['images_per_s']:.0f} | {r['peak_mem_gib']:.1f} | {r['tflop_per_step']:.3g} | "
        f"{r['mfu_text']} | {r['hlo_kernels']:,} |",
        flush=True,
      )
    print(
      f"  FLOPs from {r['flops_source']}; peak {r['peak_tflops'] or 'unknown'} TFLOP/s per device",
      flush=True,
    )


if __name__ == "__main__":
  main()
