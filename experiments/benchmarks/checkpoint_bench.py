"""Checkpoint save cost: a config's initial train state saved packed (what `Checkpointer` does
in one process) and array by array (Orbax's StandardSave, what several processes do), wall
and process CPU per save with `wait()`, then one packed restore (BENCHMARKS.md, item 2).

    python experiments/benchmarks/checkpoint_bench.py --config=configs/default.py:fashion \
      --saves=8 --set data.local_dir=<fashion dir>
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import jax  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from trainer_bench import load_config  # noqa: E402

from infonoise_jax import checkpointing, train  # noqa: E402


def timed(fn) -> tuple[float, float]:
  w, c = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - w, time.process_time() - c


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="configs/default.py:fashion", help="path[:variant]")
  p.add_argument("--saves", type=int, default=8, help="saves per layout")
  p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
  args = p.parse_args()
  run = train.Run(load_config(args.config, 1, args.set), tempfile.mkdtemp())
  state = jax.block_until_ready(run.init_fn())
  leaves = jax.tree.leaves(state)
  print(f"{args.config}: {len(leaves)} arrays, {sum(x.nbytes for x in leaves) / 1e6:.1f} MB")
  ckpt = checkpointing.Checkpointer(tempfile.mkdtemp(), keep=2)
  manager = ocp.CheckpointManager(tempfile.mkdtemp())
  finish = manager.wait_until_finished
  whole = lambda s: ocp.args.Composite(state=ocp.args.StandardSave(s), meta=ocp.args.JsonSave({}))
  # One layout after the other, as a run saves: interleaved, each layout's fresh host buffers
  # cost the other its reuse (packed saves then took 1.3-2.2 s instead of ~0.3 s).
  for name, save in (
    ("packed", lambda s: (ckpt.save(s, state), ckpt.wait())),
    ("array by array", lambda s: (manager.save(s, args=whole(state)), finish())),
  ):
    for step in range(1, args.saves + 1):
      wall, cpu = timed(lambda s=step, save=save: save(s))
      print(f"{name} save {step}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
  wall, cpu = timed(lambda: jax.block_until_ready(ckpt.restore(run.abstract_state)[0]))
  print(f"restore packed: {wall:.2f} s wall, {cpu:.2f} s CPU")
  ckpt.close()
  manager.close()


if __name__ == "__main__":
  main()
