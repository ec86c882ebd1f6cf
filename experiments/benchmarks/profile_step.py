"""Where the train step's time goes: a device trace of a few steps, summarised by kernel.

Builds the same step as `train_step_bench.py`, runs `--steps` steps under
`jax.profiler.trace`, then reads the trace back (`jax.profiler.ProfileData`, no TensorBoard
needed) and prints, per compute dtype, the device time per step split into kinds of kernel
(convolution / matmul, fusions, copies) and the kernels that take the most time, with the
HLO op each one came from.

  python experiments/benchmarks/profile_step.py --config=configs/cifar10_edm.py \
      --dtypes=bfloat16 --outdir=/tmp/prof

`--outdir` keeps the raw trace (open it in TensorBoard's profile plugin or Perfetto) and the
optimized HLO text, so fusion names in the table can be looked up.
"""

import argparse
import collections
import glob
import os
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
from train_step_bench import OPTIMIZERS, build, config_for

# Substrings of a GPU kernel's name, first match wins.
KINDS = (
  (
    "conv/matmul (cuDNN, cuBLAS, CUTLASS)",
    ("cudnn", "xmma", "gemm", "cutlass", "nvjet", "sm90", "conv"),
  ),
  ("copy / transpose", ("copy", "transpose", "memcpy", "memset")),
  ("reduction fusion", ("input_", "reduce", "row_reduction", "column_reduction")),
  ("elementwise / other fusion", ("fusion", "loop_", "triton")),
)


def kind_of(name: str) -> str:
  low = name.lower()
  for kind, keys in KINDS:
    if any(k in low for k in keys):
      return kind
  return "other"


def device_events(trace_dir: str):
  """(device, kernel name, hlo op, start ns, duration ns) of every kernel on the GPU planes of
  the newest trace under `trace_dir`."""
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
  data = jax.profiler.ProfileData.from_file(path)
  for plane in data.planes:
    if not plane.name.startswith("/device:GPU"):
      continue
    for line in plane.lines:
      if "stream" not in line.name.lower():  # kernel lines only (skip XLA op / module lines)
        continue
      for ev in line.events:
        stats = dict(ev.stats)
        hlo = stats.get("hlo_op", stats.get("tf_op", ""))
        yield plane.name, ev.name, str(hlo), ev.start_ns, ev.duration_ns


def profile(
  config, shape, steps: int, outdir: str, top: int, optimizer_layout: str | None = None
) -> None:
  step, state, x = build(config, shape, optimizer_layout)
  compiled = step.lower(state, x).compile()
  if outdir:
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, f"hlo_{config.model.dtype}.txt"), "w") as f:
      f.write(compiled.as_text())
  for _ in range(3):
    state, m = compiled(state, x)
  jax.block_until_ready(state)
  trace_dir = os.path.join(outdir or "/tmp", f"trace_{config.model.dtype}")
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      state, m = compiled(state, x)
    jax.block_until_ready(state)
  times = []
  for _ in range(20):
    t0 = time.perf_counter()
    state, m = compiled(state, x)
    jax.block_until_ready(m["loss"])
    times.append(time.perf_counter() - t0)
  step_ms = sorted(times)[10] * 1e3
  by_kind = collections.Counter()
  by_kernel = collections.Counter()
  count = collections.Counter()
  hlo_of = {}
  events = sorted((e[1:] for e in device_events(trace_dir)), key=lambda e: e[2])
  if not events:
    print(f"no GPU kernels in the trace ({jax.default_backend()} backend): this reads GPU traces")
    return
  for name, hlo, _, ns in events:
    by_kind[kind_of(name)] += ns
    key = name[:90]
    by_kernel[key] += ns
    count[key] += 1
    hlo_of.setdefault(key, hlo[:60])
  total = sum(by_kind.values())
  # Idle device time between consecutive kernels, charged to the kernel that follows.
  idle = collections.Counter()
  for (_, _, s0, d0), (name, hlo, s1, _) in zip(events, events[1:], strict=False):
    gap = s1 - (s0 + d0)
    if 0 < gap < 5e6:  # gaps over 5 ms are between steps (host), not inside one
      idle[f"{name[:60]} ({hlo[:40]})"] += gap
  dtype = config.model.dtype
  kernel_ms, idle_ms = total / steps / 1e6, sum(idle.values()) / steps / 1e6
  print(f"\n## {dtype}: step {step_ms:.1f} ms synced (median of 20, untraced)")
  print(f"kernels {kernel_ms:.1f} ms/step, idle gaps inside steps {idle_ms:.1f} ms/step")
  print("| kind | ms/step | share |\n|---|---|---|")
  for kind, ns in by_kind.most_common():
    print(f"| {kind} | {ns / steps / 1e6:.2f} | {100 * ns / total:.1f}% |")
  print(f"\n| top {top} kernels | hlo op | calls/step | ms/step | share |\n|---|---|---|---|---|")
  for key, ns in by_kernel.most_common(top):
    print(
      f"| {key} | {hlo_of[key]} | {count[key] // steps} | {ns / steps / 1e6:.2f} | "
      f"{100 * ns / total:.1f}% |"
    )
  print("\n| largest idle gaps, before kernel | ms/step |\n|---|---|")
  for key, ns in idle.most_common(10):
    print(f"| {key} | {ns / steps / 1e6:.2f} |")
  if outdir:
    with open(os.path.join(outdir, f"kernels_{dtype}.tsv"), "w") as f:
      f.write("kernel\thlo_op\tcalls_per_step\tms_per_step\n")
      for key, ns in by_kernel.most_common():
        f.write(f"{key}\t{hlo_of[key]}\t{count[key] / steps}\t{ns / steps / 1e6:.4f}\n")


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/cifar10_edm.py", help="path[:variant]")
  p.add_argument("--dtypes", default="bfloat16")
  p.add_argument("--batch_size", type=int, default=0, help="0 = the config's")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--shape", default="32,32,3")
  p.add_argument("--top", type=int, default=40)
  p.add_argument("--outdir", default="", help="keep the trace and the optimized HLO here")
  p.add_argument(
    "--optimizer",
    default=None,
    choices=OPTIMIZERS,
    help="train_step_bench.build's layout (default: the config's, optim.flat_update)",
  )
  args = p.parse_args()
  shape = tuple(int(s) for s in args.shape.split(","))
  print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}")
  for dtype in args.dtypes.split(","):
    config = config_for(args.config, dtype, args.batch_size)
    profile(config, shape, args.steps, args.outdir, args.top, args.optimizer)


if __name__ == "__main__":
  main()
