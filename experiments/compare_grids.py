"""Compare sampling grids (Karras vs InfoGrid) on a trained run at equal step counts.

Draws samples from a run's EMA model with each grid and number of Heun steps and reports
the Frechet distance to the training data in pixel space (lower is better). Same model,
same seeds, only the sigma grid changes (docs/method.md section 5).

  python experiments/compare_grids.py --workdir=runs/digits --num=2000 --steps=10,18,50
"""

import argparse
import os
import sys

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import numpy as np

from infonoise_jax import restore
from infonoise_jax.data import load_source
from infonoise_jax.evaluation import fid
from infonoise_jax.model_sampler import Sampler, sampler_config


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--num", type=int, default=2000)
  p.add_argument("--steps", default="10,18,50")
  p.add_argument("--grids", default="karras,infogrid,infogrid_rescaled")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  run = restore.restore_run(args.workdir)
  sampler = Sampler(run.config, run.model, run.schedule, run.mesh, run.data_shape)
  state, step = run.state, run.step
  data = load_source(sampler.config).array
  ref = fid.stats_of_features(data.reshape(len(data), -1).astype(np.float64))
  print(f"run {args.workdir} at step {step}; FD to the data in pixel space, {args.num} samples")
  print("| grid | Heun steps | FD | sigmas (first 4) |")
  print("| --- | --- | --- | --- |")
  for grid in args.grids.split(","):
    for n in map(int, args.steps.split(",")):
      config = sampler_config(sampler.config, grid=grid, num_steps=n)
      sigmas = sampler.sigmas(state.schedule_state, config)
      x = sampler.draw_all(state.ema_params, sigmas, args.num, args.seed)
      d = fid.frechet_distance(fid.stats_of_features(x.reshape(len(x), -1)), ref)
      head = ", ".join(f"{s:.3g}" for s in np.asarray(sigmas)[:4])
      print(f"| {grid} | {n} | {d:.4f} | {head} |", flush=True)


if __name__ == "__main__":
  main()
