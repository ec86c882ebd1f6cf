"""Command: score a trained run's EMA model: FID for images, domain metrics for token data.

  python -m infonoise_jax.evaluate --workdir=runs/cifar10 [--num=50000] [--seed_sets=3] \
      [--ref_stats=stats.npz] [--grid=karras] [--steps=18] [--method=heun] [--step=200000]

Images: FID with EDM's protocol, written to <workdir>/fid.json. 50k samples per seed set, seed
sets 0, 1, 2, report the minimum (`fids` keeps every set). Seed set s scores exactly the
samples `python -m infonoise_jax.sample --seed=s --num=<num>` writes. Reference statistics:
--ref_stats, else the run's fid.ref_stats, else computed from the run's dataset (train split)
and cached in fid.cache_dir (evaluation/model_fid.py). Needs the converted Inception weights
(fid.weights_path or --weights; docs/fid.md); without them inception.load_params says how to
get them.

Token data (dna, text; the checkpoint's meta has a vocabulary): the domain metrics of
`evaluation/sequence_eval.py` instead (DNA: k-mer JS, GC distance, classifier Frechet; text:
n-gram JS, n-gram NLL), written to <workdir>/domain_metrics.json (`evaluate_tokens`). Seed set
s scores the same samples as above (--num of them, default the run's train.eval_num_samples,
as its TensorBoard domain/ curves) against as many held-out windows of the run's data files
(config.json's data.path; they must give the checkpoint's vocabulary), with the metrics' floor
(--num other held-out windows: a perfect model's score at this sample count) and the mean over
seed sets of the `primary` metric, the one to rank by (lower is better). --ref_stats and
--weights are FID's and refused here.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np

from infonoise_jax import cli, restore, resume, solvers
from infonoise_jax.data import load_source
from infonoise_jax.data.sources import data_location_items
from infonoise_jax.evaluation import fid, model_fid, sequence_eval
from infonoise_jax.mesh import initialize_distributed, make_mesh
from infonoise_jax.model_sampler import Sampler, sampler_config
from infonoise_jax.paths import run_path

IMAGES_NUM = 50_000  # default samples per FID seed set (EDM's protocol)
FID_FILE, TOKENS_FILE = "fid.json", "domain_metrics.json"  # what images / token runs write


def evaluate(
  workdir: str,
  num: int | None = None,
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
  overrides: Sequence[str] = (),
) -> dict:
  """FID of the run's EMA model (min over `seed_sets` seed sets); writes and returns fid.json.
  A token run is scored by `evaluate_tokens` instead (domain_metrics.json; no --ref_stats,
  --weights). `overrides`: `sampler.key=value` items (`model_sampler.sampler_config`).

  `report(line)` receives progress lines (the command prints them on process 0).
  """
  config = restore.load_config(workdir, overrides)  # --set data.path=...: the data moved
  solvers.check_grid(config, grid)  # before loading weights or restoring
  run_config = sampler_config(config, grid, num_steps, method, overrides)
  solvers.validate_sampler_config(run_config)
  meta = restore.saved_meta(workdir, step)  # the checkpoint and step, before the weights
  if meta.get("vocab"):  # token data: its domain metrics, not FID
    _refuse_fid_flags(config, ref_stats, weights)
    args = (workdir, num, seed_sets, grid, num_steps, step, batch, devices, report, method)
    return evaluate_tokens(*args, overrides=overrides)
  num = IMAGES_NUM if num is None else num
  _check_counts(num, seed_sets)
  model_fid.check_images(tuple(int(d) for d in meta["data_shape"]), "this run")
  given = ref_stats or config.fid.ref_stats  # reference statistics given, not computed
  source = None  # the reference's data, read here when it moved (and once)
  if data_location_items(overrides) and not given:
    source = load_source(config)
    restore.check_data_shape(workdir, config, source.shape, meta["data_shape"])
  given_stats = fid.load_stats(given) if given else None  # read (and checked) once, early
  extractor = model_fid.make_extractor(config, make_mesh(devices), weights)  # missing: fail here
  run = restore.restore_run(workdir, step, devices)
  sampler = Sampler(run_config, run.model, run.schedule, run.mesh, run.data_shape)
  model_fid.check_images(sampler.data_shape, "the model")
  if given_stats is not None:
    ref, ref_path = given_stats, given
  else:
    ref, ref_path = model_fid.load_reference(config, extractor, source=source)
  sampler.warn_if_profile_unlearned(run.state.schedule_state, run.step)
  sigmas = sampler.sigmas(run.state.schedule_state)
  seeds = list(range(seed_sets))
  if report is not None:
    sets = f"{num} samples x {seed_sets} seed sets"
    report(f"{workdir} @ step {run.step}: FID of {sets} vs {ref_path}")
    for note in model_fid.fid_notes(num, ref.n, "--num"):
      report(f"note: {note}")
  fids = []
  for seed in seeds:
    batches = sampler.draw(run.state.ema_params, sigmas, num, seed, batch)
    fids.append(model_fid.fid_of_batches(batches, config.data.scale, ref, extractor))
    if report is not None:
      report(f"seed set {seed}: FID {fids[-1]:.4f} ({num} samples)")
  result = {
    "fid": min(fids),
    "fids": fids,
    "seeds": seeds,
    "num_samples": num,
    "checkpoint_step": run.step,
    "sampler": _sampler_settings(run_config),
    "reference": {"stats": str(run_path(ref_path)), "num_images": ref.n},
  }
  if jax.process_index() == 0:
    (run_path(workdir) / FID_FILE).write_text(json.dumps(result, indent=2))
  return result


def evaluate_tokens(
  workdir: str,
  num: int | None = None,
  seed_sets: int = 3,
  grid: str | None = None,
  num_steps: int | None = None,
  step: int | None = None,
  batch: int | None = None,
  devices: Sequence[jax.Device] | None = None,
  report: Callable[[str], None] | None = None,
  method: str | None = None,
  overrides: Sequence[str] = (),
) -> dict:
  """Domain metrics of a token run's EMA model (module docstring); writes and returns
  domain_metrics.json. The data, its vocabulary and the held-out windows are checked and the
  reference models built before the weights are restored or anything is sampled. `num`
  defaults to the run's train.eval_num_samples, so the numbers compare with its TensorBoard
  domain/ curves (those use seed config.seed, these seed sets 0..S-1)."""
  config = restore.load_config(workdir, overrides)
  num = int(config.train.eval_num_samples) if num is None else num
  _check_counts(num, seed_sets)
  solvers.check_grid(config, grid)
  run_config = sampler_config(config, grid, num_steps, method, overrides)
  solvers.validate_sampler_config(run_config)
  step = restore.check_step(workdir, step)
  meta = restore.saved_meta(workdir, step)
  vocab = meta.get("vocab")
  if not vocab:
    raise ValueError(
      f"{workdir} (data.name={config.data.name!r}) is not a token run: its checkpoint at step "
      f"{step} has no vocabulary. Image runs are scored by FID (evaluate)"
    )
  data = config.copy_and_resolve_references()  # the run's data files, as it trained on them
  data.data.split, data.train.eval_num_samples = "train", num
  source = resume.source_on_saved_vocabulary(data, vocab, workdir, step)
  resume.warn_if_held_out_changed(data, source, meta, workdir, step)
  sequence_eval.check_held_out(data, num, "--num")
  evaluator = sequence_eval.SequenceEvaluator(data, source)  # DNA: trains or loads its classifier
  primary, floor = evaluator.primary, _floats(evaluator.floor())
  run = restore.restore_run(workdir, step, devices)
  sampler = Sampler(run_config, run.model, run.schedule, run.mesh, run.data_shape)
  sampler.warn_if_profile_unlearned(run.state.schedule_state, run.step)
  sigmas = sampler.sigmas(run.state.schedule_state)
  seeds, d = list(range(seed_sets)), data.data
  if report is not None:
    sets = f"{num} samples x {seed_sets} seed sets"
    where = f"{num} held-out windows of {d.path}"
    report(f"{workdir} @ step {run.step}: {d.name} domain metrics of {sets} vs {where}")
    report(
      f"floor ({num} other held-out windows, what a perfect model scores): {primary} "
      f"{floor[primary]:.4f}; the metrics are biased upwards at small --num: compare them "
      "only at equal --num"
    )
  metrics = []
  for seed in seeds:
    samples_NLV = sampler.draw_all(run.state.ema_params, sigmas, num, seed, batch)
    metrics.append(_floats(evaluator.metrics(samples_NLV)))
    if report is not None:
      rest = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics[-1].items()) if k != primary)
      report(f"seed set {seed}: {primary} {metrics[-1][primary]:.4f} ({rest})")
  values = [m[primary] for m in metrics]
  result = {
    "data": d.name,
    "primary": primary,
    "primary_values": values,
    "primary_mean": float(np.mean(values)),
    "metrics": metrics,
    "floor": floor,
    "seeds": seeds,
    "num_samples": num,
    "checkpoint_step": run.step,
    "sampler": _sampler_settings(run_config),
    "reference": {"data_path": d.path, "held_out_windows": num},
  }
  if jax.process_index() == 0:
    (run_path(workdir) / TOKENS_FILE).write_text(json.dumps(result, indent=2))
  return result


def _check_counts(num: int, seed_sets: int) -> None:
  if seed_sets < 1:
    raise ValueError(f"--seed_sets must be >= 1, got {seed_sets}")
  if num < 2:
    raise ValueError(f"--num: FID and the domain metrics need at least 2 samples, got {num}")


def _refuse_fid_flags(config: ml_collections.ConfigDict, ref_stats, weights) -> None:
  given = [flag for flag, v in (("--ref_stats", ref_stats), ("--weights", weights)) if v]
  if given:
    raise ValueError(
      f"{' and '.join(given)}: FID settings, but this run is on token data (data.name="
      f"{config.data.name!r}), scored with its domain metrics against held-out windows (no "
      f"Inception network or reference statistics); leave {' and '.join(given)} out"
    )


def _floats(values: dict) -> dict[str, float]:
  return {k: float(v) for k, v in values.items()}


def _sampler_settings(config: ml_collections.ConfigDict) -> dict:
  s = config.sampler
  return {
    "method": s.name,
    "grid": s.grid,
    "num_steps": s.num_steps,
    "network_evaluations": solvers.num_evaluations(s.num_steps, s.name),
  }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog="python -m infonoise_jax.evaluate",
    description=__doc__.split("\n")[0],
    epilog="Token runs (dna, text) write domain_metrics.json: the domain metrics against --num "
    "held-out windows of the run's data files, their floor, and the primary metric's mean over "
    "seed sets (docs/sequences.md).",
  )
  p.add_argument("--workdir", required=True, help="training run directory")
  p.add_argument(
    "--num",
    type=int,
    default=None,
    help="samples per seed set; default 50000 for FID, the run's train.eval_num_samples for "
    "token runs (there also the number of held-out windows)",
  )
  p.add_argument(
    "--seed_sets",
    type=int,
    default=3,
    help="seed sets 0..S-1; FID is their min, token runs report the primary metric's mean",
  )
  p.add_argument("--ref_stats", default=None, help="FID: .npz of mu, sigma, n (default: from data)")
  p.add_argument("--grid", choices=solvers.GRIDS, default=None, help="default: the run's")
  p.add_argument("--steps", type=int, default=None, help="sigma levels (default: the run's)")
  p.add_argument("--method", choices=solvers.METHODS, default=None, help="default: the run's")
  p.add_argument("--weights", default=None, help="FID: Inception .npz (default: fid.weights_path)")
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
  result = evaluate(*args, a.batch, report=report, method=a.method, overrides=a.set)
  if jax.process_index() == 0:
    print(json.dumps(result, indent=2), flush=True)
    name = FID_FILE if "fid" in result else TOKENS_FILE
    print(f"written to {os.path.join(a.workdir, name)}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
