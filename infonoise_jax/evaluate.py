"""Command: FID of a trained run's EMA model with EDM's protocol; writes <workdir>/fid.json.

  python -m infonoise_jax.evaluate --workdir=runs/cifar10 [--num=50000] [--seed_sets=3] \
      [--ref_stats=stats.npz] [--grid=karras] [--steps=18] [--method=heun] [--step=200000]

EDM's protocol: 50k samples per seed set, seed sets 0, 1, 2, report the minimum (`fids`
keeps every set). Seed set s scores exactly the samples `python -m infonoise_jax.sample
--seed=s --num=<num>` writes. Reference statistics: --ref_stats, else the run's fid.ref_stats,
else computed from the run's dataset (train split) and cached in fid.cache_dir
(evaluation/model_fid.py). Needs the converted Inception weights (fid.weights_path or
--weights; docs/fid.md); without them inception.load_params says how to get them.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

import jax

from infonoise_jax import cli, restore, solvers
from infonoise_jax.evaluation import fid, model_fid
from infonoise_jax.mesh import initialize_distributed, make_mesh
from infonoise_jax.model_sampler import Sampler, sampler_config
from infonoise_jax.paths import run_path

SMALL_SET = 10_000  # below this many samples per set, the command notes FID's bias


def evaluate(
  workdir: str,
  num: int = 50000,
  seed_sets: int = 3,
  ref_stats: str | None = None,
  grid: str | None = None,
  num_steps: int | None = None,
  step: int | None = None,
  weights: str | None = None,
  batch: int | None = None,
  devices: Sequence[jax.Device] | None = None,
  report: Callable[[str], None] | None = None,
  method: str | None = None,
) -> dict:
  """FID of the run's EMA model (min over `seed_sets` seed sets); writes and returns fid.json.

  `report(line)` receives progress lines (the command prints them on process 0).
  """
  if seed_sets < 1:
    raise ValueError(f"--seed_sets must be >= 1, got {seed_sets}")
  if num < 2:
    raise ValueError(f"--num: FID needs at least 2 samples, got {num}")
  config = restore.load_config(workdir)
  solvers.check_grid(config, grid)  # before loading weights or restoring
  run_config = sampler_config(config, grid, num_steps, method)
  solvers.validate_sampler_config(run_config)
  restore.check_step(workdir, step)  # the checkpoint and step, before the weights
  model_fid.check_images(restore.saved_data_shape(workdir, step), "this run")  # tokens: no FID
  if ref_stats or config.fid.ref_stats:
    fid.check_stats_file(ref_stats or config.fid.ref_stats)
  extractor = model_fid.make_extractor(config, make_mesh(devices), weights)  # missing: fail here
  run = restore.restore_run(workdir, step, devices)
  sampler = Sampler(run_config, run.model, run.schedule, run.mesh, run.data_shape)
  model_fid.check_images(sampler.data_shape, "the model")
  ref, ref_path = model_fid.load_reference(config, extractor, ref_stats)
  sigmas = sampler.sigmas(run.state.schedule_state)
  seeds = list(range(seed_sets))
  if report is not None:
    sets = f"{num} samples x {seed_sets} seed sets"
    report(f"{workdir} @ step {run.step}: FID of {sets} vs {ref_path}")
    if num < SMALL_SET:
      report(
        f"note: FID is biased upwards at small sample counts ({num} per set here, 50000 in "
        "EDM's protocol): compare FIDs only at equal --num"
      )
  fids = []
  for seed in seeds:
    batches = sampler.draw(run.state.ema_params, sigmas, num, seed, batch)
    fids.append(model_fid.fid_of_batches(batches, config.data.scale, ref, extractor))
    if report is not None:
      report(f"seed set {seed}: FID {fids[-1]:.4f} ({num} samples)")
  s = run_config.sampler
  result = {
    "fid": min(fids),
    "fids": fids,
    "seeds": seeds,
    "num_samples": num,
    "checkpoint_step": run.step,
    "sampler": {
      "method": s.name,
      "grid": s.grid,
      "num_steps": s.num_steps,
      "network_evaluations": solvers.num_evaluations(s.num_steps, s.name),
    },
    "reference": {"stats": str(run_path(ref_path)), "num_images": ref.n},
  }
  if jax.process_index() == 0:
    (run_path(workdir) / "fid.json").write_text(json.dumps(result, indent=2))
  return result


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog="python -m infonoise_jax.evaluate", description=__doc__.split("\n")[0]
  )
  p.add_argument("--workdir", required=True, help="training run directory")
  p.add_argument("--num", type=int, default=50000, help="samples per seed set")
  p.add_argument("--seed_sets", type=int, default=3, help="seed sets 0..S-1; FID is their min")
  p.add_argument("--ref_stats", default=None, help=".npz of mu, sigma, n (default: from data)")
  p.add_argument("--grid", choices=solvers.GRIDS, default=None, help="default: the run's")
  p.add_argument("--steps", type=int, default=None, help="sigma levels (default: the run's)")
  p.add_argument("--method", choices=solvers.METHODS, default=None, help="default: the run's")
  p.add_argument("--weights", default=None, help="Inception .npz (default: fid.weights_path)")
  cli.add_checkpoint_command_flags(p)
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  a = _parse(argv)
  cli.run_command(lambda: _command(a), a.debug)


def _command(a: argparse.Namespace) -> None:
  if a.distributed:  # the training run's multi-host start-up (system.*), before any JAX call
    initialize_distributed(restore.load_config(a.workdir))
  report = (lambda line: print(line, flush=True)) if jax.process_index() == 0 else None
  args = (a.workdir, a.num, a.seed_sets, a.ref_stats, a.grid, a.steps, a.step, a.weights)
  result = evaluate(*args, a.batch, report=report, method=a.method)
  if jax.process_index() == 0:
    print(json.dumps(result, indent=2), flush=True)
    print(f"written to {os.path.join(a.workdir, 'fid.json')}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
