"""How much does one evaluation draw move a model's pixel FD, and do draws move models together?

compare_schedules.py draws an evaluation's samples from the seed 10,000 + step for every arm and
training seed (paired by design), and measures the metric's noise from one second draw per
model at the last step. This script asks what that design hides: it trains the runs of one
config side by side (seeds vmapped, `multirun.MultiRun`, as the harness does) for --steps, then
scores every run's EMA samples under each of --draws (default: the harness's evaluation seeds
of steps 1,000..10,000, i.e. 11,000..20,000) and prints

- the FD table, draws x runs;
- per draw, its mean deviation from each run's own mean over all draws (the shared part of a
  draw's effect) and the spread of that deviation across runs;
- the correlation across draws between runs' deviations: near 1, a draw moves every model the
  same way (the same initial noise maps to similar samples under similar models); near 0,
  each model's FD wobbles on its own.

  python experiments/eval_draw_study.py --config=configs/default.py:fashion,mlp \
    --set=data.local_dir=.data/fm --steps=1500 --seeds=0,1 --num_samples=1000 --out=draws.jsonl

--out gets one JSON line per (run, draw) with the config hash. CPU cost (2 cores, MLP 512x3 at
28x28): see experiments/RESULTS.md where it is used.
"""

import argparse
import json
import os
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import compare_schedules  # this script's folder is on sys.path when it runs
import numpy as np

from infonoise_jax import multirun
from infonoise_jax.validation import load_config_file, parse_overrides

HARNESS_DRAWS = ",".join(str(10_000 + s) for s in range(1_000, 10_001, 1_000))


def draw_effects(fd_DR: np.ndarray) -> dict:
  """fd_DR: FD of draw d for run r. Returns each draw's deviation from its run's mean over all
  draws (dev_DR), the mean deviation per draw (shared_D), the mean |deviation| (spread), and the
  mean pairwise correlation between runs' deviation columns (nan for one run)."""
  dev_DR = fd_DR - fd_DR.mean(axis=0, keepdims=True)
  r = fd_DR.shape[1]
  corr = [np.corrcoef(dev_DR[:, i], dev_DR[:, j])[0, 1] for i in range(r) for j in range(i + 1, r)]
  return {
    "dev_DR": dev_DR,
    "shared_D": dev_DR.mean(axis=1),
    "spread": float(np.abs(dev_DR).mean()),
    "corr": float(np.mean(corr)) if corr else float("nan"),
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/default.py:fashion,mlp", help="path[:variant]")
  p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
  p.add_argument("--steps", type=int, default=1500, help="training steps")
  p.add_argument("--seeds", default="0,1", help="training seeds, vmapped")
  p.add_argument("--draws", default=HARNESS_DRAWS, help="sample seeds to score every run under")
  p.add_argument("--num_samples", type=int, default=1000, help="samples per draw")
  p.add_argument("--out", default="", help="JSON lines, appended ('' = none)")
  args = p.parse_args()
  draws = [int(s) for s in args.draws.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]
  if len(draws) < 2 or args.steps < 1 or args.num_samples < 2:
    p.error("need at least two --draws, --steps >= 1 and --num_samples >= 2")

  path, _, variant = args.config.partition(":")
  config = load_config_file(path, variant or None)
  config.update_from_flattened_dict(parse_overrides(args.set))
  mr = multirun.MultiRun(config, seeds)
  ref = compare_schedules.reference(config, mr.source)
  state, bad = mr.init()
  t0 = time.time()
  for step in range(1, args.steps + 1):
    state, bad, _ = mr.train_step(state, mr.batch(step - 1), bad)
  multirun.check_finite(bad, seeds, (1, args.steps))
  print(f"trained {len(seeds)} runs for {args.steps} steps in {time.time() - t0:.0f} s", flush=True)

  fd_DR = np.zeros((len(draws), len(seeds)))
  h = compare_schedules.config_hash(config)
  for d, draw in enumerate(draws):
    for r, seed in enumerate(seeds):
      x = mr.samples(state, r, args.num_samples, draw)
      fd_DR[d, r] = compare_schedules.eval_metrics(x, mr.source, ref)["fd"]
      if args.out:
        rec = {"draw": draw, "seed": seed, "step": args.steps, "fd": fd_DR[d, r]}
        rec |= {"num_samples": args.num_samples, "config_hash": h}
        with open(args.out, "a") as f:
          f.write(json.dumps(rec) + "\n")
    print(f"draw {draw}: " + " ".join(f"{v:.4f}" for v in fd_DR[d]), flush=True)

  e = draw_effects(fd_DR)
  print(f"\n| draw | {' | '.join(f'seed {s}' for s in seeds)} | shared deviation |")
  print("|---" * (len(seeds) + 2) + "|")
  for d, draw in enumerate(draws):
    cells = " | ".join(f"{v:.4f}" for v in fd_DR[d])
    print(f"| {draw} | {cells} | {e['shared_D'][d]:+.4f} |")
  print(
    f"\nmean |deviation| of a draw from its run's mean: {e['spread']:.4f}; correlation of the "
    f"runs' deviations across draws: {e['corr']:.3f}; largest shared deviation "
    f"{np.abs(e['shared_D']).max():.4f} (draw {draws[int(np.argmax(np.abs(e['shared_D'])))]})"
  )


if __name__ == "__main__":
  main()
