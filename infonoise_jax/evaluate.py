"""Command: score a trained run's EMA model: FID for images, domain metrics for token data.

  python -m infonoise_jax.evaluate --workdir=runs/cifar10 [--num=50000] [--seed_sets=3] \
      [--ref_stats=stats.npz] [--grid=karras] [--steps=18] [--method=heun] [--step=200000]

Images: FID with EDM's protocol, added to <workdir>/fid.json. 50k samples per seed set, seed
sets 0, 1, 2, report the minimum (`fids` keeps every set). Seed set s scores exactly the
samples `python -m infonoise_jax.sample --seed=s --num=<num>` writes. Reference statistics:
--ref_stats, else the run's fid.ref_stats, else computed from the run's dataset (train split)
and cached in fid.cache_dir (evaluation/model_fid.py). Needs the converted Inception weights
(fid.weights_path or --weights; docs/fid.md); without them inception.load_params says how to
get them.

fid.json keeps every evaluation (`store_result`): its top-level fields are the latest one's (as
the file of one result earlier versions wrote, which is read as that result and kept), and
`results` lists all of them, oldest first, one per checkpoint step, sample count, seed sets,
sampler settings and reference (RESULT_KEY). Scoring an older --step or a quick --num=1000
check adds to the file; only a repeat of the same evaluation replaces its own entry.

Token data (dna, text; the checkpoint's meta has a vocabulary): the domain metrics of
`evaluation/sequence_eval.py` instead (DNA: k-mer JS, GC distance, classifier Frechet; text:
n-gram JS, n-gram NLL), added to <workdir>/domain_metrics.json (`evaluate_tokens`), which
keeps every evaluation as fid.json does. Seed set s scores the same samples as above (--num
of them, default the run's train.eval_num_samples, as its TensorBoard domain/ curves) against
as many held-out windows of the run's data files (config.json's data.path; they must give the
checkpoint's vocabulary), with the metrics' floor (--num other held-out windows: a perfect
model's score at this sample count) and the mean over seed sets of the `primary` metric, the
one to rank by (lower is better). --ref_stats and --weights are FID's and refused here. The
metrics' own settings are evaluation settings, not the model's: `--set seq_metrics.<key>=<value>`
changes them for this evaluation (e.g. --set seq_metrics.ngram_sizes=1,2,3 for a run on 3-token
windows), checked as the trainer checks them before the weights are restored; each result
records them (`seq_metrics`), so evaluations under other settings are kept side by side.
"""

import argparse
import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from infonoise_jax import cli, restore, resume, solvers, validation
from infonoise_jax.data import load_source
from infonoise_jax.data.sources import data_location_items
from infonoise_jax.evaluation import fid, model_fid, sequence_eval
from infonoise_jax.mesh import initialize_distributed, make_mesh
from infonoise_jax.model_sampler import Sampler, sampler_config
from infonoise_jax.paths import is_remote, run_path

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
  """FID of the run's EMA model (min over `seed_sets` seed sets); returns it and adds it to
  fid.json (`store_result`: earlier evaluations are kept).
  A token run is scored by `evaluate_tokens` instead (domain_metrics.json; no --ref_stats,
  --weights). `overrides`: `sampler.key=value` items (`model_sampler.sampler_config`), on
  token runs also `seq_metrics.key=value` items (`evaluate_tokens`).

  `report(line)` receives progress lines (the command prints them on process 0).
  """
  config = restore.load_config(workdir, overrides)  # --set data.path=...: the data moved
  metric_items = seq_metrics_items(overrides)  # the token runs' metric settings
  sampler_items = [o for o in overrides if o not in metric_items]
  solvers.check_grid(config, grid)  # before loading weights or restoring
  run_config = sampler_config(config, grid, num_steps, method, sampler_items)
  solvers.validate_sampler_config(run_config)
  meta = restore.saved_meta(workdir, step)  # the checkpoint and step, before the weights
  if meta.get("vocab"):  # token data: its domain metrics, not FID
    _refuse_fid_flags(config, ref_stats, weights)
    args = (workdir, num, seed_sets, grid, num_steps, step, batch, devices, report, method)
    return evaluate_tokens(*args, overrides=overrides)
  if metric_items:
    raise ValueError(
      f"--set {metric_items[0]}: seq_metrics.* are the settings of token runs' domain metrics, "
      f"but this run is on images (data.name={config.data.name!r}), scored by FID; leave it out"
    )
  stored_results(run_path(workdir) / FID_FILE)  # an unreadable one is named before any work
  num = IMAGES_NUM if num is None else num
  _check_counts(num, seed_sets)
  model_fid.check_images(tuple(int(d) for d in meta["data_shape"]), "this run")
  given = ref_stats or config.fid.ref_stats  # reference statistics given, not computed
  source = None  # the reference's data, read here when it moved (and once)
  if data_location_items(overrides) and not given:
    source = load_source(config)
    restore.check_data_shape(workdir, config, source.shape, meta["data_shape"])
  given_stats = fid.load_stats(given) if given else None  # read (and checked) once, early
  if not given:  # the reference's images (too few: said before the weights are loaded)
    source = model_fid.reference_source(config, source)
  extractor = model_fid.make_extractor(config, make_mesh(devices), weights)  # missing: fail here
  run = restore.restore_run(workdir, step, devices)
  if not given:  # given statistics: not the run's data
    _warn_if_trained_on_other_data(workdir, run.step, overrides)
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
    store_result(run_path(workdir) / FID_FILE, result)
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
  """Domain metrics of a token run's EMA model (module docstring); returns them and adds them
  to domain_metrics.json (`store_result`). The data, its vocabulary and the held-out windows
  are checked and the reference models built before the weights are restored or anything is
  sampled. `num` defaults to the run's train.eval_num_samples, so the numbers compare with its
  TensorBoard domain/ curves (those use seed config.seed, these seed sets 0..S-1).
  `overrides`: as `evaluate`'s, and `seq_metrics.key=value` items: the metrics' settings for
  this evaluation (checked as the trainer checks them; recorded in the result)."""
  config = restore.load_config(workdir, overrides)
  metric_items = seq_metrics_items(overrides)
  overrides = [o for o in overrides if o not in metric_items]
  apply_seq_metrics(config, metric_items)
  stored_results(run_path(workdir) / TOKENS_FILE)  # an unreadable one is named before any work
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
  _warn_if_trained_on_other_data(workdir, run.step, overrides)
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
    "seq_metrics": _metric_settings(data),
  }
  if jax.process_index() == 0:
    store_result(run_path(workdir) / TOKENS_FILE, result)
  return result


# What makes two evaluations the same one: a result file keeps one entry per value of these.
# (seq_metrics: token runs' metric settings; results written before it was recorded have none.)
RESULT_KEY = ("checkpoint_step", "num_samples", "seeds", "sampler", "reference", "seq_metrics")


def result_key(result: dict) -> str:
  """The evaluation `result` is of (RESULT_KEY's fields), as a comparable string."""
  return json.dumps([result.get(k) for k in RESULT_KEY], sort_keys=True)


def merge_results(stored: list[dict], result: dict) -> dict:
  """The content of a result file holding `stored` (earlier results, oldest first) and then
  `result`: `result`'s fields at the top level (the latest evaluation, where readers of one
  result look) and `results`, every evaluation kept, `result` last. An earlier result of the
  same evaluation (`result_key`) is replaced; every other one is kept."""
  key = result_key(result)
  kept = [r for r in stored if result_key(r) != key]
  return {**result, "results": [*kept, result]}


def stored_results(path) -> list[dict]:
  """The results a result file at `path` holds, oldest first ([] if there is none). A file of
  one result without `results` (what earlier versions wrote) is that one result."""
  if not path.exists():
    return []
  fix = f"move it aside (e.g. to {path.name}.old) and rerun; nothing was computed"
  try:
    content = json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not readable as JSON ({e}); {fix}") from e
  results = content.get("results", [content]) if isinstance(content, dict) else None
  if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
    raise ValueError(f"{path}: not a results file as evaluate writes it; {fix}")
  return results


def store_result(path, result: dict) -> None:
  """Adds `result` to the result file at `path` (`merge_results`), written atomically: a
  stopped write leaves the earlier file whole. On a local disk the read, merge and write hold
  an exclusive lock on `<file>.lock` beside it, so evaluations of one run finishing at once
  (two --method values on two GPUs) all stay; a remote workdir (gs://) has no such lock: run
  its evaluations one after another."""
  with contextlib.ExitStack() as stack:
    if not is_remote(path):
      lock = stack.enter_context(open(f"{path}.lock", "a"))
      fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
    content = merge_results(stored_results(path), result)
    tmp = path.parent / f"{path.name}.{os.getpid()}.tmp"  # one per writer
    tmp.write_text(json.dumps(content, indent=2))
    tmp.replace(path)


def seq_metrics_items(overrides: Sequence[str]) -> list[str]:
  """The `seq_metrics.key=value` items of `overrides`: the domain metrics' own settings."""
  return [o for o in overrides if o.split("=", 1)[0].strip().startswith("seq_metrics.")]


def apply_seq_metrics(config: ml_collections.ConfigDict, items: Sequence[str]) -> None:
  """Applies `seq_metrics.key=value` items to `config` in place, checked as the trainer
  checks them (known key, type, whole-number sizes; the sizes' range and lm_order are checked
  by SequenceEvaluator, which comes before the weights are restored)."""
  if items:
    validation.apply_overrides(config, items)
    validation.check_whole_number_tuples(config, validation.default_config())


def _warn_if_trained_on_other_data(workdir: str, step: int, overrides: Sequence[str]) -> None:
  """A checkpoint trained before a resume moved the data is scored against the data of
  config.json: said, unless --set names the data for this evaluation."""
  if not data_location_items(overrides):
    for note in resume.data_changes_since(workdir, step):
      logging.warning("%s", note)


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


def _metric_settings(config: ml_collections.ConfigDict) -> dict:
  """The seq_metrics settings the metrics of `config.data.name` read (as JSON values)."""
  s = config.seq_metrics
  if config.data.name == "dna":
    sizes, width, steps = [int(k) for k in s.kmer_sizes], s.classifier_width, s.classifier_steps
    return {"kmer_sizes": sizes, "classifier_width": width, "classifier_steps": steps}
  return {"ngram_sizes": [int(n) for n in s.ngram_sizes], "lm_order": int(s.lm_order)}


def _sampler_settings(config: ml_collections.ConfigDict) -> dict:
  s = config.sampler
  settings = {
    "method": s.name,
    "grid": s.grid,
    "num_steps": s.num_steps,
    "network_evaluations": solvers.num_evaluations(s.num_steps, s.name),
  }
  if s.grid == "karras":  # its exponent (the InfoGrids do not read it)
    settings["rho"] = s.rho
  if s.name == "stochastic":  # EDM's Algorithm 2: what its churn was
    settings.update(s_churn=s.s_churn, s_tmin=s.s_tmin, s_tmax=s.s_tmax, s_noise=s.s_noise)
  return settings


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
  cli.run_command(lambda: _command(a), a.debug, takes_set=True)


def _command(a: argparse.Namespace) -> None:
  if a.distributed:  # the training run's multi-host start-up (system.*), before any JAX call
    initialize_distributed(restore.load_config(a.workdir))
  report = (lambda line: print(line, flush=True)) if jax.process_index() == 0 else None
  args = (a.workdir, a.num, a.seed_sets, a.ref_stats, a.grid, a.steps, a.step, a.weights)
  had = {n for n in (FID_FILE, TOKENS_FILE) if os.path.exists(os.path.join(a.workdir, n))}
  result = evaluate(*args, a.batch, report=report, method=a.method, overrides=a.set)
  if jax.process_index() == 0:
    print(json.dumps(result, indent=2), flush=True)
    name = FID_FILE if "fid" in result else TOKENS_FILE
    kept = " (earlier results kept)" if name in had else ""
    print(f"written to {os.path.join(a.workdir, name)}{kept}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
