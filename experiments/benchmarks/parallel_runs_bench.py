"""Side-by-side training runs on one accelerator: vmap over a run axis vs several processes.

Measures aggregate throughput (run-steps/s and images/s summed over runs) of
  * one process training R runs in one step vmapped over a leading run axis (multirun.py);
  * P processes on the same device, each with an equal memory fraction, each training R runs.
Processes compile, then wait at a file barrier so their timed windows overlap; the aggregate is
all run-steps over (last end - first start).

  python experiments/benchmarks/parallel_runs_bench.py --config=configs/default.py:fashion \
      --set=model.model_channels=32 --vmap=1,3,9 --procs=3x1,3x3,9x1 --iters=100

Prints one JSON line per setting. Set JAX_COMPILATION_CACHE_DIR so processes reuse compiles.

`--conv_wgrad=taps` swaps the U-Net's convolution (`unet_layers.conv2d`) for one whose
weight gradient is a sum over the kernel's taps of matmuls (`unet_layers.conv2d_taps`):
vmapped over runs these become batched matmuls, where jax's batching of the plain
convolution's weight gradient is a grouped convolution whose window is the whole image
(RESULTS.md section 9). Same values up to rounding (tests/models_test.py); an A/B of the
vmapped layout's cost.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

if not __package__:
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax
import numpy as np

from infonoise_jax import multirun
from infonoise_jax.models import unet_layers
from infonoise_jax.validation import load_config_file, parse_overrides


def make_config(spec: str, overrides):

  path, _, variant = spec.partition(":")
  c = load_config_file(path, variant) if variant else load_config_file(path)
  c.update_from_flattened_dict(parse_overrides(overrides))
  return c


def time_runs(config, runs: int, iters: int, barrier: str = "", nprocs: int = 1) -> dict:
  """Compiles, warms up, optionally waits at the barrier, then times `iters` steps."""
  t = time.time()
  mr = multirun.MultiRun(config, list(range(runs)))
  state, bad = mr.init()
  batches = [mr.batch(i) for i in range(4)]
  state, bad, watched = mr.train_step(state, batches[0], bad)
  jax.block_until_ready(watched)
  compile_s = time.time() - t
  for i in range(3):
    state, bad, watched = mr.train_step(state, batches[i % 4], bad)
  jax.block_until_ready(watched)
  if barrier:
    open(os.path.join(barrier, f"ready{os.getpid()}"), "w").close()
    while len([f for f in os.listdir(barrier) if f.startswith("ready")]) < nprocs:
      time.sleep(0.01)
  start = time.time()
  for i in range(iters):
    state, bad, watched = mr.train_step(state, batches[i % 4], bad)
  jax.block_until_ready(watched)
  end = time.time()
  return {
    "runs": runs,
    "compile_s": round(compile_s, 1),
    "start": start,
    "end": end,
    "run_steps": runs * iters,
    "finite": bool(np.all(np.isfinite(np.asarray(watched["loss"])))),
  }


def summarize(label: str, results: list[dict], batch: int) -> dict:
  t = max(r["end"] for r in results) - min(r["start"] for r in results)
  steps = sum(r["run_steps"] for r in results)
  return {
    "setting": label,
    "device": jax.devices()[0].device_kind,
    "run_steps_per_s": round(steps / t, 1),
    "images_per_s": round(steps * batch / t),
    "ms_per_run_step": round(1000 * t / steps, 2),
    "compile_s": [r["compile_s"] for r in results],
    "finite": all(r["finite"] for r in results),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/default.py:fashion")
  p.add_argument("--set", action="append")
  p.add_argument("--vmap", default="1,3", help="run counts for the one-process vmap setting")
  p.add_argument("--procs", default="3x1", help="PxR: P processes of R vmapped runs each")
  p.add_argument("--iters", type=int, default=100)
  p.add_argument("--child", default="", help="(internal) barrier dir,R,P")
  p.add_argument("--conv_wgrad", default="conv", choices=["conv", "taps"])
  args = p.parse_args()
  with unet_layers.tap_weight_gradients(args.conv_wgrad == "taps"):
    run(args)


def run(args):
  config = make_config(args.config, args.set)
  if args.child:
    barrier, r, n = args.child.split(",")
    print("CHILD " + json.dumps(time_runs(config, int(r), args.iters, barrier, int(n))))
    return
  batch = config.train.batch_size
  for r in filter(None, args.vmap.split(",")):
    res = time_runs(config, int(r), args.iters)
    print(json.dumps(summarize(f"1 process, vmap over {r} runs", [res], batch)), flush=True)
  for spec in filter(None, args.procs.split(",")):
    n, r = map(int, spec.split("x"))
    with tempfile.TemporaryDirectory() as barrier:
      env = {**os.environ, "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / n:.3f}"}
      argv = [sys.executable, os.path.abspath(__file__), f"--config={args.config}"]
      argv += [f"--set={s}" for s in args.set or []]
      argv += [f"--iters={args.iters}", f"--child={barrier},{r},{n}"]
      argv += [f"--conv_wgrad={args.conv_wgrad}"]
      procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(n)]
      outs = [pr.communicate()[0] for pr in procs]
      res = [json.loads(line[6:]) for o in outs for line in o.splitlines() if line[:6] == "CHILD "]
      if len(res) != n:
        raise SystemExit(f"{n - len(res)} of {n} processes failed")
      print(json.dumps(summarize(f"{n} processes x vmap over {r} runs", res, batch)), flush=True)


if __name__ == "__main__":
  main()
