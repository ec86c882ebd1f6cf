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
import math
import os
import re
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
  low = name.lower().replace("convert", "cvt")  # an XLA convert fusion is not a convolution
  for kind, keys in KINDS:
    if any(k in low for k in keys):
      return kind
  return "other"


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2, "f16": 2}
_DTYPE_BYTES |= {"s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}
_ARRAY = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([\w\-]+)\((.*)$")


def shape_bytes(shape: str) -> int:
  """Bytes of an HLO shape string: 'bf16[512,32,32,256]{3,2,1,0}' or a tuple of such."""
  total = 0
  for dtype, dims in _ARRAY.findall(shape):
    if dtype in _DTYPE_BYTES:
      total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
  return total


def _instructions(hlo_text: str):
  """(name, result shape, opcode, operand names, rest of the line) of every instruction of an
  HLO module's text, in order."""
  for line in hlo_text.splitlines():
    m = _INSTR.match(line)
    if not m:
      continue
    name, shape, op, rest = m.groups()
    depth, args = 1, []  # operands: the %names before the call's closing parenthesis
    for i, ch in enumerate(rest):
      depth += (ch == "(") - (ch == ")")
      if depth == 0:
        args = re.findall(r"%([\w.\-]+)", rest[:i])
        break
    yield name, shape, op, args, rest


def hlo_traffic(hlo_text: str) -> dict[str, int]:
  """Bytes each instruction of an optimized HLO module reads and writes, as its operands'
  and result's sizes: `{instruction name: bytes}`.

  The kernels of a GPU trace name the instruction they ran (`hlo_op`), so bytes over a
  kernel's time is the bandwidth it reached. An upper bound on real traffic where a fusion
  reads only part of an operand (slices inside it) and a lower one where it reads one twice.
  """
  shapes, traffic = {}, {}
  for name, shape, _, args, _ in _instructions(hlo_text):
    shapes[name] = shape
    traffic[name] = shape_bytes(shape) + sum(shape_bytes(shapes.get(a, "")) for a in args)
  return traffic


def _dims(shape: str) -> list[int]:
  m = _ARRAY.search(shape)
  return [int(d) for d in m.group(2).split(",") if d] if m else []


def matmul_flops(hlo_text: str) -> dict[str, int]:
  """FLOPs of each cuDNN convolution and cuBLAS matmul custom call of an optimized GPU module.

  A convolution, forward or either gradient, is 2 x (output positions) x (filter elements):
  XLA's `dim_labels` name the forward roles (lhs input, rhs filter, output), and the backward
  calls hold them as (dy, w) -> dx and (x, dy) -> dw. A matmul is 2 x (result elements) x
  (contracted size)."""
  shapes, flops = {}, {}
  for name, shape, op, args, rest in _instructions(hlo_text):
    shapes[name] = shape
    if op != "custom-call":
      continue
    target = re.search(r'custom_call_target="([^"]+)"', rest)
    target = target.group(1) if target else ""
    arg_dims = [_dims(shapes.get(a, "")) for a in args]
    out_dims = _dims(shape)  # a tuple's first element (result, scratch)
    if "$conv" in target:
      labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", rest)
      if not labels or len(arg_dims) < 2:
        continue
      rhs, out_l = labels.group(2), labels.group(3)
      if "BackwardInput" in target:
        y, w = arg_dims[0], arg_dims[1]
      elif "BackwardFilter" in target:
        y, w = arg_dims[1], out_dims
      else:
        y, w = out_dims, arg_dims[1]
      if len(y) != len(out_l) or len(w) != len(rhs):
        continue
      positions = math.prod(y) // y[out_l.index("f")]
      flops[name] = 2 * positions * math.prod(w)
    elif "gemm" in target or "matmul" in target:
      k = re.search(r'"lhs_contracting_dimensions":\["?([0-9",]*)', rest)
      if not k or not arg_dims:
        continue
      idx = [int(i) for i in k.group(1).replace('"', "").split(",") if i]
      flops[name] = 2 * math.prod(out_dims) * math.prod(arg_dims[0][i] for i in idx)
  return flops


def op_table(events, traffic: dict[str, int], steps: int, flops=None) -> list[tuple]:
  """Per HLO instruction of the trace's kernels: (op, kind of its costliest kernel, ms per
  step, MB read + written per call by `hlo_traffic`, GB/s, TFLOP/s by `matmul_flops` or 0),
  costliest first. An op that runs as several kernels (a cuDNN convolution's, a reduction's
  two passes) is charged with all of them, and its bytes once per step."""
  ns, kinds = collections.Counter(), {}
  for name, hlo, _, dur in events:
    ns[hlo] += dur
    kinds.setdefault(hlo, collections.Counter())[kind_of(name)] += dur
  rows = []
  for op, t in ns.most_common():
    mb = traffic.get(op, 0) / 1e6
    ms = t / steps / 1e6
    tflops = (flops or {}).get(op, 0) / 1e12
    rows.append(
      (
        op,
        kinds[op].most_common(1)[0][0],
        ms,
        mb,
        mb / ms if ms and mb else 0.0,
        tflops / (ms / 1e3) if ms else 0.0,
      )
    )
  return rows


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
  hlo_text = compiled.as_text()
  traffic = hlo_traffic(hlo_text)
  if outdir:
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, f"hlo_{config.model.dtype}.txt"), "w") as f:
      f.write(hlo_text)
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
    hlo_of.setdefault(key, hlo)
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
      f"| {key} | {hlo_of[key][:60]} | {count[key] // steps} | {ns / steps / 1e6:.2f} | "
      f"{100 * ns / total:.1f}% |"
    )
  ops = op_table(events, traffic, steps, matmul_flops(hlo_text))
  print(
    f"\n| top {top} HLO ops | kind | ms/step | MB/call | GB/s | TFLOP/s |"
    "\n|---|---|---|---|---|---|"
  )
  for op, kind, ms, mb, gbs, tfs in ops[:top]:
    print(f"| {op[:50]} | {kind} | {ms:.3f} | {mb:.1f} | {gbs:.0f} | {tfs:.0f} |")
  conv = [o for o in ops if o[5] > 0]
  if conv:
    ms, tf = sum(o[2] for o in conv), sum(o[2] * o[5] / 1e3 for o in conv)
    print(
      f"convolutions and matmuls with a FLOP count: {ms:.2f} ms/step, {tf:.1f} TFLOP, "
      f"{tf / ms * 1e3:.0f} TFLOP/s"
    )
  for kind in sorted({o[1] for o in ops}):
    rows = [o for o in ops if o[1] == kind and o[3] > 0 and not o[5]]
    ms, mb = sum(o[2] for o in rows), sum(o[3] for o in rows)
    if ms:
      print(
        f"{kind}: {ms:.2f} ms/step in ops of known size, {mb / 1e3:.1f} GB/step "
        f"({mb / ms:.0f} GB/s)"
      )
  print("\n| largest idle gaps, before kernel | ms/step |\n|---|---|")
  for key, ns in idle.most_common(10):
    print(f"| {key} | {ns / steps / 1e6:.2f} |")
  if outdir:
    with open(os.path.join(outdir, f"kernels_{dtype}.tsv"), "w") as f:
      f.write("kernel\thlo_op\tcalls_per_step\tms_per_step\n")
      for key, ns in by_kernel.most_common():
        f.write(f"{key}\t{hlo_of[key]}\t{count[key] / steps}\t{ns / steps / 1e6:.4f}\n")
    with open(os.path.join(outdir, f"ops_{dtype}.tsv"), "w") as f:
      f.write("hlo_op\tkind\tms_per_step\tMB_per_call\tGB_per_s\tTFLOP_per_s\n")
      for row in ops:
        f.write("\t".join(str(v) for v in row) + "\n")


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
    "--set",
    nargs="*",
    default=[],
    metavar="KEY=VALUE",
    help="config overrides, e.g. model.remat_norm=True",
  )
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
    config = config_for(args.config, dtype, args.batch_size, args.set)
    profile(config, shape, args.steps, args.outdir, args.top, args.optimizer)


if __name__ == "__main__":
  main()
