"""The whole trainer's throughput against its bare train step, same config, same batch size.

  python experiments/benchmarks/trainer_bench.py --config=configs/default.py:fashion --steps=3000
  python experiments/benchmarks/trainer_bench.py --config=configs/default.py --steps=2000  # CPU

1. **Bare step:** `train.Run(config)` builds the trainer's own jitted step (same shardings and
   donation); it runs on one real batch of the config's data, already on the device, steps
   dispatched back to back as `train_step_bench.py` times them; compile and warm-up left out.
   Median over `--repeats` rounds of `--iters` steps.
2. **Trainer:** `train.train_and_evaluate` on a fresh workdir for `--steps` steps: the real data
   pipeline, window metrics, TensorBoard, checkpoints and sample grids of the config (change
   them with `--set train.checkpoint_every=...`; A/B the loop's run-ahead bound with
   `--set train.max_steps_in_flight=0`). Its throughput is read back from its own
   TensorBoard scalars: each log window timed from the moment the device finished the
   previous window to the moment it finished this one (`metrics.ProgressReporter`), the
   first step (compile) left out, sample grids and evaluations timed apart
   (`perf/excluded_seconds`, reported here). Checkpoints stay in.
3. The bare step again (shared CPUs drift); the ratio is against the mean of both.

`--variants` times, instead of the trainer, the ways the trainer's step call differs from the
bare step's, added one at a time in interleaved rounds (VARIANTS below): the AOT-compiled step
the loop calls, batches from the pipeline's thread copied on the loop's thread or by the
prefetch thread, the loop's in-flight wait and window metrics. On the H200 the trainer's
windows ran at 62-80% of the bare step with the GPU 56-78% busy against 98-99% in the bare
rounds (BENCHMARKS.md, item 2): this finds which difference leaves the device idle.

Prints a markdown table: images/s of the bare step and of the trainer (whole run and its
slowest / fastest window), the ratio, the time the trainer spent on sample grids and in
checkpoint saves, its wall clock including compiling and the final samples, and MFU where the
device's peak is known (`infonoise_jax.flops`); `--windows` adds each log window's rate.
"""

import argparse
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax
import numpy as np

from infonoise_jax import checkpointing, flops, train, writers
from infonoise_jax.validation import load_config_file, parse_overrides


def load_config(config_arg: str, steps: int, overrides=()):
  path, _, variant = config_arg.partition(":")
  config = load_config_file(path, variant or None)
  config.update_from_flattened_dict(parse_overrides(overrides))
  config.train.num_steps = steps
  return config


def check_tools() -> None:
  """Raises before any compile when the trainer could not write its TensorBoard scalars or this
  script could not read them back (the tensorboard package): otherwise a GPU call spends its
  bare-step rounds first and fails only when the trainer starts."""
  writers.check_available()
  if importlib.util.find_spec("tensorboard") is None:
    raise ImportError(
      "trainer_bench reads the trainer's window throughput back with the tensorboard package, "
      "which is not installed: `pip install tensorboard` (requirements.txt lists it)."
    )


def bare_step(run: "train.Run", iters: int, repeats: int) -> dict:
  """Seconds per step of the trainer's jitted step, dispatched back to back."""
  state = run.init_fn()
  batch = run.global_batch(run.pipeline.batch(0))
  state, _ = run.train_step(state, batch)  # compiles
  for _ in range(3):
    state, _ = run.train_step(state, batch)
  jax.block_until_ready(state)
  rounds = []
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(iters):
      state, _ = run.train_step(state, batch)
    jax.block_until_ready(state)
    rounds.append((time.perf_counter() - t) / iters)
  compiled = run.train_step.lower(state, batch).compile()  # cached: no second compile
  count = flops.step_flops(run.train_step.trace(state, batch).jaxpr, compiled, jax.device_count())
  return {
    "step_s": float(np.median(rounds)),
    "mean_step_s": float(np.mean(rounds)),  # every round counted, as the trainer's windows are
    "rounds_s": rounds,
    "flops": count,
  }


# The trainer's step call differs from the bare step's in three ways: it calls the AOT-compiled
# step (a `jax.stages.Compiled`, traced and compiled or loaded from the step store, as
# `train.CompileAhead` hands it over) rather than the jitted function, its batches come from
# the data pipeline's thread and are copied to the device by a second thread
# (`Run.device_batches`), and it waits on the step `max_steps_in_flight` back and accumulates
# window metrics each step. `loop_variants` adds them one at a time, so the one that costs shows
# as a drop. (name, AOT-compiled step, feed, in-flight bound, window metrics); feed: "fixed" =
# one batch already on the device, "here" = the pipeline thread's host batches copied on the
# calling thread, "prefetch" = the loop's feed (copied by the prefetch thread); bound: None = no
# wait, "config" = train.max_steps_in_flight as the loop has it (32), a number = that bound
# (a deeper queue absorbs host pauses longer than `bound` steps of device time). SHALLOW is
# the default before 2026-12-04, kept for the comparison that chose 32 (BENCHMARKS.md, item 2).
SHALLOW = 4
VARIANTS = (
  ("jit, one device batch (the bare step)", False, "fixed", None, False),
  ("compiled, one device batch", True, "fixed", None, False),
  ("jit, pipeline batches copied on the loop's thread", False, "here", None, False),
  ("jit, pipeline batches copied by the prefetch thread", False, "prefetch", None, False),
  ("compiled, one device batch, in-flight wait", True, "fixed", "config", False),
  ("compiled, one device batch, window metrics", True, "fixed", None, True),
  ("compiled, one device batch, in-flight wait, window metrics", True, "fixed", "config", True),
  (
    f"compiled, one device batch, in-flight wait {SHALLOW}, window metrics",
    True,
    "fixed",
    SHALLOW,
    True,
  ),
  (
    "compiled, prefetched batches, in-flight wait, window metrics (the loop's calls)",
    True,
    "prefetch",
    "config",
    True,
  ),
  (
    f"compiled, prefetched batches, in-flight wait {SHALLOW}, window metrics",
    True,
    "prefetch",
    SHALLOW,
    True,
  ),
)


def loop_variants(run: "train.Run", iters: int, repeats: int) -> list[dict]:
  """Seconds per step of each of VARIANTS, timed in interleaved rounds (variant 1 round 1,
  variant 2 round 1, ..., variant 1 round 2, ...) so that a device or host that drifts moves
  every variant alike. One state is carried through all rounds (the step donates it)."""
  from infonoise_jax import metrics

  state = run.init_fn()
  fixed = run.global_batch(run.pipeline.batch(0))
  jitted = run.train_step
  ahead = train.CompileAhead(run).step()  # the program the loop calls, made as the loop gets it
  compiled = ahead.program
  print(f"the loop's step: {ahead.source}", flush=True)
  workers = train.data_workers(run.config, run.source)
  host = run.pipeline.iterate(0, num_workers=workers)
  prefetched = run.device_batches(0, workers)
  feeds = {
    "fixed": lambda: fixed,
    "here": lambda: run.global_batch(next(host)),
    "prefetch": lambda: next(prefetched),
  }
  try:
    for step_fn in (jitted, compiled):  # compiles; warms both paths
      state, _ = step_fn(state, feeds["prefetch"]())
    jax.block_until_ready(state)
    rounds = [[] for _ in VARIANTS]
    for _ in range(repeats):
      for v, (_, use_compiled, feed, bound, with_metrics) in enumerate(VARIANTS):
        step_fn, batch = (compiled if use_compiled else jitted), feeds[feed]
        limit = run.config.train.max_steps_in_flight if bound == "config" else bound
        in_flight = None if bound is None else train._InFlight(limit)
        window = None
        t = time.perf_counter()
        for i in range(iters):
          state, step_metrics = step_fn(state, batch())
          if in_flight is not None:
            in_flight.add(i, step_metrics["loss"])
          if with_metrics:
            window = metrics.accumulate(window, step_metrics)
        jax.block_until_ready(state)
        rounds[v].append((time.perf_counter() - t) / iters)
  finally:
    prefetched.close()
    getattr(host, "close", lambda: None)()
  return [
    {"name": name, "step_s": float(np.median(r)), "rounds_s": r}
    for (name, *_), r in zip(VARIANTS, rounds, strict=True)
  ]


def print_variants(results: list[dict], batch: int) -> None:
  base = results[0]["step_s"]
  print("\n| step call | images/s (median) | vs the bare step | rounds, images/s |")
  print("| --- | --- | --- | --- |")
  for r in results:
    each = ", ".join(f"{batch / s:,.0f}" for s in r["rounds_s"])
    print(
      f"| {r['name']} | {batch / r['step_s']:,.0f} | {100 * base / r['step_s']:.1f}% | {each} |"
    )


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of every scalar under `logdir`, whichever writer wrote it
  (tensorboardX: scalar summaries; clu with TensorFlow: tensors of the scalars plugin)."""
  from tensorboard.backend.event_processing import event_accumulator as ea
  from tensorboard.util import tensor_util

  acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
  acc.Reload()
  out = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
  for tag in acc.Tags()["tensors"]:
    if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars":
      out[tag] = [
        (e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)
      ]
  return out


def trainer(config, workdir: str) -> dict:
  """Runs the trainer; its window throughput from its TensorBoard scalars. A stop signal
  (a time limit's SIGTERM) ends it as a preemption does: the windows it finished are still
  read, and `stopped_at` says at which step it saved and stopped (None: it ran to the end).
  One that lands after the steps, while the final samples are drawn, stops it outside the
  loop: its stop step is the newest checkpoint's, every window is there."""
  t = time.perf_counter()
  stopped_at = None
  try:
    train.train_and_evaluate(config, workdir)
  except checkpointing.Preempted as e:
    stopped_at = e.step
  except checkpointing.StoppedOutsideLoop:
    stopped_at = (checkpointing.saved_steps(workdir) or [0])[-1]
  wall = time.perf_counter() - t
  s = read_scalars(os.path.join(workdir, "tensorboard"))
  if not s.get("perf/window_seconds"):
    sys.exit(f"the trainer stopped at step {stopped_at} before its first log window ended")
  seconds = np.array([v for _, v in s["perf/window_seconds"]])
  rate = np.array([v for _, v in s["perf/steps_per_sec"]])
  steps = rate * seconds  # steps of each window (the first one starts after step 1)
  checkpoint = dict(s.get("perf/checkpoint_seconds", []))
  data_wait = dict(s.get("perf/data_wait_seconds", []))
  device_wait = dict(s.get("perf/device_wait_seconds", []))
  dispatch = dict(s.get("perf/dispatch_seconds", []))
  return {
    "steps": float(steps.sum()),
    "seconds": float(seconds.sum()),
    "steps_per_s": float(steps.sum() / seconds.sum()),
    "window_steps_per_s": rate,
    "excluded_s": sum(v for _, v in s["perf/excluded_seconds"]),
    "checkpoint_s": sum(checkpoint.values()),
    "wall_s": wall,
    "stopped_at": stopped_at,
    "num_windows": len(rate),
    # (end step, steps/s, seconds, checkpoint s, data wait s, device wait s, dispatch s) per
    # window
    "windows": [
      (step, r, w, *(d.get(step, 0.0) for d in (checkpoint, data_wait, device_wait, dispatch)))
      for (step, _), r, w in zip(s["perf/steps_per_sec"], rate, seconds, strict=True)
    ],
  }


class _Stopped(Exception):
  """A stop signal (SIGTERM: a call's time limit) while the bare step is timed after the
  trainer."""


def bare_step_after(run: "train.Run", iters: int, repeats: int) -> dict | None:
  """`bare_step` after the trainer, or None when a stop signal ends it first: the trainer's
  result is then reported against the rounds before it instead of being lost with the
  process (a call's `timeout` that lands in these rounds)."""

  def stop(signum, frame):
    raise _Stopped

  previous = signal.signal(signal.SIGTERM, stop)
  try:
    return bare_step(run, iters, repeats)
  except _Stopped:
    print(
      "Stopped by a stop signal in the closing bare-step rounds: the ratios below use the "
      "rounds before the trainer only.",
      flush=True,
    )
    return None
  finally:
    signal.signal(signal.SIGTERM, previous)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/default.py:fashion", help="path[:variant]")
  p.add_argument("--steps", type=int, default=3000, help="trainer steps (train.num_steps)")
  p.add_argument("--iters", type=int, default=100, help="bare steps per timing round")
  p.add_argument("--repeats", type=int, default=5, help="timing rounds of the bare step")
  p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
  p.add_argument("--workdir", default="", help="trainer workdir ('' = a temporary one)")
  p.add_argument(
    "--windows", action="store_true", help="also print each log window's images/s (decay, saves)"
  )
  p.add_argument(
    "--switch_interval_ms",
    type=float,
    default=0.0,
    help="sys.setswitchinterval for the whole run (0 = Python's 5 ms): with background threads "
    "busy in Python, each time the loop's thread takes the GIL back can cost up to this long",
  )
  p.add_argument(
    "--variants",
    action="store_true",
    help="time only the step call's variants (AOT-compiled step, pipeline batches, the loop's "
    "waits), interleaved, instead of the trainer: which of them costs the trainer its rate",
  )
  args = p.parse_args()
  if args.switch_interval_ms:
    sys.setswitchinterval(args.switch_interval_ms / 1e3)

  config = load_config(args.config, args.steps, args.set)
  if args.variants:
    workdir = args.workdir or tempfile.mkdtemp(prefix="trainer_bench_")
    run = train.Run(config, workdir)
    print(
      f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}, config "
      f"{args.config} {' '.join(args.set)}, batch {config.train.batch_size}",
      flush=True,
    )
    print_variants(loop_variants(run, args.iters, args.repeats), config.train.batch_size)
    if not args.workdir:
      shutil.rmtree(workdir, ignore_errors=True)
    return
  check_tools()
  dev = jax.devices()[0]
  print(
    f"{jax.device_count()} x {dev.device_kind}, jax {jax.__version__}, config {args.config} "
    f"{' '.join(args.set)}, batch {config.train.batch_size}, {args.steps} trainer steps, "
    f"GIL switch interval {sys.getswitchinterval() * 1e3:g} ms",
    flush=True,
  )
  workdir = args.workdir or tempfile.mkdtemp(prefix="trainer_bench_")
  if os.path.exists(os.path.join(workdir, "checkpoints")):
    sys.exit(f"{workdir} already holds a run; give a fresh --workdir")
  bare_run = train.Run(load_config(args.config, args.steps, args.set), workdir)
  b = config.train.batch_size
  before = bare_step(bare_run, args.iters, args.repeats)
  print(  # now, so that a run cut short by a hard limit still leaves it in the log
    f"Bare step before the trainer: {b / before['step_s']:,.0f} images/s (median), rounds "
    + ", ".join(f"{b / r:,.0f}" for r in before["rounds_s"]),
    flush=True,
  )
  tr = trainer(config, workdir)
  stopped = tr["stopped_at"]
  if stopped is None:
    after = bare_step_after(bare_run, args.iters, args.repeats)
  else:  # a stop signal (the call's time limit): report what was measured, time nothing more
    after = None
    print(
      f"The trainer was stopped at step {stopped} of {args.steps} by a stop signal; its "
      "windows until then are below, the bare step is timed before it only.",
      flush=True,
    )
  if not args.workdir:
    shutil.rmtree(workdir, ignore_errors=True)

  bares = [before] if after is None else [before, after]
  bare_s = float(np.mean([x["step_s"] for x in bares]))
  when = "before" if after is None else "before / after"
  bare_ips = b / bare_s
  kind, peak = flops.device_peak(config)
  count = before["flops"]
  n = jax.device_count()
  mfu = lambda steps_per_s: flops.describe_mfu(flops.mfu(count.flops, steps_per_s, peak, n), kind)
  rows = [
    (
      f"bare step (median of {args.repeats} x {args.iters}; {when} the trainer: "
      + " / ".join(f"{b / x['step_s']:,.0f}" for x in bares)
      + ")",
      bare_ips,
      1.0,
      mfu(1 / bare_s),
    ),
    (
      f"trainer, {tr['steps']:.0f} steps in {tr['num_windows']} log windows (compile and "
      "sample grids left out)",
      tr["steps_per_s"] * b,
      tr["steps_per_s"] / (1 / bare_s),
      mfu(tr["steps_per_s"]),
    ),
    (
      "trainer, slowest log window",
      tr["window_steps_per_s"].min() * b,
      tr["window_steps_per_s"].min() * bare_s,
      "",
    ),
    (
      "trainer, fastest log window",
      tr["window_steps_per_s"].max() * b,
      tr["window_steps_per_s"].max() * bare_s,
      "",
    ),
    (
      "trainer, wall clock of the whole call (compiles, sample grids, final samples in)",
      (stopped or args.steps) * b / tr["wall_s"],
      (stopped or args.steps) * b / tr["wall_s"] * bare_s / b,
      "",
    ),
  ]
  print("\n| measured | images/s | vs bare step | MFU |\n| --- | --- | --- | --- |")
  for what, ips, ratio, m in rows:
    print(f"| {what} | {ips:,.0f} | {100 * ratio:.1f}% | {m} |")
  print(
    f"\nTrainer: {tr['excluded_s']:.1f} s on sample grids / evaluations (timed apart), "
    f"{tr['checkpoint_s']:.1f} s in checkpoint saves (included), wall clock {tr['wall_s']:.1f} s."
    f"\nFLOPs per step {count.flops / 1e9:.4g} GFLOP ({count.source}); peak "
    f"{'unknown' if peak is None else f'{peak:g} TFLOP/s'} per device ({kind}, "
    f"{config.model.dtype})."
  )
  slowest = max(r for x in bares for r in x["rounds_s"])
  mean_s = float(np.mean([x["mean_step_s"] for x in bares]))
  rounds = len(bares) * args.repeats
  print(
    f"Bare step over all {rounds} rounds of {args.iters}: mean {b / mean_s:,.0f} "
    f"images/s (the trainer is at {100 * tr['steps_per_s'] * mean_s:.1f}% of it), slowest round "
    f"{b / slowest:,.0f} ({100 * bare_s / slowest:.1f}% of the median). The ratios above use "
    "the median; a bare step that slows in stretches as the trainer's windows do shows here."
  )
  if args.windows:
    print(
      f"\nBare rounds, images/s ({when.replace('/', '|')}): "
      + " | ".join(", ".join(f"{b / r:,.0f}" for r in x["rounds_s"]) for x in bares)
    )
    # Where the loop's thread spent the window: waiting for the next batch (data behind: a
    # host stall), for the device (the step max_steps_in_flight back: the device is the
    # bottleneck), inside the step's call (dispatch: launching the step, or blocking while the
    # device's launch queue is full; a GPU busy well below 100% means the former) and
    # everything else (the loop's
    # own Python: window metrics, saves, logging; or the thread waiting for the GIL).
    print(
      "\n| window end step | images/s | vs bare step | checkpoint s | data wait s | device wait s "
      "| dispatch s | rest of loop s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for step, r, window_s, ckpt_s, data_s, dev_s, call_s in tr["windows"]:
      rest = window_s - data_s - dev_s - call_s
      print(
        f"| {step} | {r * b:,.0f} | {100 * r * bare_s:.1f}% | {ckpt_s:.2f} | {data_s:.2f} "
        f"| {dev_s:.2f} | {call_s:.2f} | {rest:.2f} |"
      )


if __name__ == "__main__":
  main()
