"""Command: draw samples from a trained run's EMA model and write them to files.

  python -m infonoise_jax.sample --workdir=runs/digits --num=1000 --out=runs/digits/samples \
      [--seed=0] [--grid=karras|infogrid|infogrid_rescaled] [--method=heun|exp_heun|euler|...]
      [--steps=18] [--step=4000] [--set sampler.s_churn=40 ...]

The run is read back by `restore.restore_run` (config.json and the checkpoint; no
training data is read) and sampled by a `model_sampler.Sampler`, sharded over every device.
Writes `<out>/samples.npz` and, for images, `<out>/samples.png` (format: sample_files.py, the
same as the trainer's final samples); for token data (dna, text) also the argmax ids `tokens`
with the checkpoint's `vocab` in the .npz, and `<out>/samples.txt` (text) or `<out>/samples.fa`
(DNA, FASTA). Sample j of seed s is the same whatever the batch size, device count or `--num`.
An `--out` that is a training run's folder (the run's own workdir, where the trainer keeps its
final samples.npz) is refused before anything is restored (`check_out`).
The infogrid grids use the checkpoint's learned profile (docs/method.md section 5).
"""

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from infonoise_jax import cli, restore, solvers
from infonoise_jax import workdir as workdir_lib
from infonoise_jax.data.tokens import TokenEncoding
from infonoise_jax.mesh import initialize_distributed
from infonoise_jax.model_sampler import Sampler, sampler_config
from infonoise_jax.paths import is_remote, run_path
from infonoise_jax.resume import CONFIG_FILE
from infonoise_jax.sample_files import (
  GRID_IMAGES,
  data_record,
  samples_step,
  write_samples,
  write_texts,
)


class Drawn(NamedTuple):
  samples: np.ndarray
  paths: dict  # kind ("npz", "png", "fa", "txt") -> file written
  meta: dict  # seed, step, grid, num_steps, method (and tokens, vocab for token data)


def sample_run(
  workdir: str,
  num: int,
  out: str,
  seed: int = 0,
  grid: str | None = None,
  num_steps: int | None = None,
  step: int | None = None,
  batch: int | None = None,
  devices: Sequence[jax.Device] | None = None,
  method: str | None = None,
  overrides: Sequence[str] = (),
) -> Drawn:
  """Restores the run, draws `num` samples, writes them to `out`; returns (samples, paths,
  meta: the checkpoint step and sampler, as samples.npz records them; empty on processes other
  than 0). `overrides`: `sampler.key=value` items (`sampler_config`)."""
  if num < 1:
    raise ValueError(f"--num must be >= 1, got {num}")
  check_out(workdir, out)
  config = restore.load_config(workdir, overrides)  # --set data.path=...: the data moved
  config = sampler_config(config, grid, num_steps, method, overrides)
  solvers.validate_sampler_config(config)  # before restoring anything
  workdir_lib.check_outside_data(out, config.data.get("path", ""), "--out")  # no data of a resume
  run = restore.restore_run(workdir, step, devices)
  sampler = Sampler(config, run.model, run.schedule, run.mesh, run.data_shape)
  sampler.warn_if_profile_unlearned(run.state.schedule_state, run.step)
  sigmas = sampler.sigmas(run.state.schedule_state)
  samples = sampler.draw_all(run.state.ema_params, sigmas, num, seed, batch)
  paths, meta = {}, {}
  if jax.process_index() == 0:
    s = config.sampler
    meta = dict(seed=seed, step=run.step, grid=s.grid, num_steps=s.num_steps, method=s.name)
    vocab = run.meta.get("vocab", "")  # token data: the run's vocabulary, for decoding
    if vocab:
      meta.update(tokens=TokenEncoding(vocab).decode(samples), vocab=vocab)
    if sampler.is_image:  # what the samples are of, for fid_of_samples.py's check
      meta.update(data_record(config.data))
    paths = write_samples(out, samples, config.data.scale, sampler.is_image, **meta)
    if vocab:  # DNA as FASTA (samples.fa), text as samples.txt
      dna = config.data.name == "dna"
      paths["fa" if dna else "txt"] = write_texts(
        out, vocab, meta["tokens"], dna, seed=seed, step=run.step
      )
  return Drawn(samples, paths, meta)


def check_out(workdir: str, out: str) -> None:
  """Refuses an `out` the samples must not go to, before anything is restored: a file, or a
  training run's folder (this run's workdir, or any folder holding a run's config.json). There
  the trainer keeps its final samples (samples.npz, samples.png, .txt / .fa) and reads
  samples.npz back to tell a finished run; the command's files would replace them, or be
  replaced by them when the run finishes."""
  if is_remote(out) or is_remote(workdir):
    same = str(run_path(out)).rstrip("/") == str(run_path(workdir)).rstrip("/")
  else:
    if os.path.exists(out) and not os.path.isdir(out):
      raise ValueError(f"--out={out} is a file: give a folder for the samples")
    same = os.path.realpath(os.path.expanduser(out)) == os.path.realpath(
      os.path.expanduser(workdir)
    )
  folder = run_path(out)
  if not same and not (folder / CONFIG_FILE).exists():
    return
  what = "the run's own folder" if same else f"a training run's folder (it holds {CONFIG_FILE})"
  final = samples_step(out)
  lost = "" if final is None else f": its samples.npz (step {final}) would be overwritten"
  raise ValueError(
    f"--out={out} is {what}, where the trainer keeps its final samples (samples.npz, "
    f"samples.png) and reads samples.npz to tell that the run finished{lost}. Write the "
    f"command's samples to another folder, e.g. --out={os.path.join(out, 'samples')} (the "
    "default for --workdir)"
  )


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog="python -m infonoise_jax.sample", description=__doc__.split("\n")[0]
  )
  p.add_argument("--workdir", required=True, help="training run directory")
  p.add_argument("--num", type=int, default=GRID_IMAGES, help="number of samples")
  p.add_argument("--out", default=None, help="output directory (default <workdir>/samples)")
  p.add_argument("--seed", type=int, default=0, help="sample j uses key fold_in(key(seed), j)")
  p.add_argument("--grid", choices=solvers.GRIDS, default=None, help="default: the run's")
  p.add_argument("--steps", type=int, default=None, help="sigma levels (default: the run's)")
  p.add_argument("--method", choices=solvers.METHODS, default=None, help="default: the run's")
  cli.add_checkpoint_command_flags(p)
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  a = _parse(argv)
  cli.run_command(lambda: _command(a), a.debug, takes_set=True)


def _command(a: argparse.Namespace) -> None:
  if a.distributed:  # the training run's multi-host start-up (system.*), before any JAX call
    initialize_distributed(restore.load_config(a.workdir))
  out = a.out or os.path.join(a.workdir, "samples")
  samples, paths, meta = sample_run(
    a.workdir,
    a.num,
    out,
    a.seed,
    a.grid,
    a.steps,
    a.step,
    a.batch,
    method=a.method,
    overrides=a.set,
  )
  if jax.process_index() == 0:
    lines = [
      f"{len(samples)} samples of shape {samples.shape[1:]} from {a.workdir}, {_drawn_with(meta)}:"
    ]
    lines += [f"  {name:<4}: {path}" for name, path in paths.items()]
    print("\n".join(lines), flush=True)


def _drawn_with(meta: dict) -> str:
  """Which checkpoint and sampler drew the samples: without --step, the newest checkpoint,
  which on a run still training is whichever step was saved last."""
  return (
    f"checkpoint step {int(meta['step'])} ({meta['method']} on the {meta['grid']} grid, "
    f"{int(meta['num_steps'])} levels, seed {int(meta['seed'])})"
  )


if __name__ == "__main__":
  main(sys.argv[1:])
