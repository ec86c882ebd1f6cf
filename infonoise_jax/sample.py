"""Draw samples from a trained run's EMA model: the library behind it and the command.

  python -m infonoise_jax.sample --workdir=runs/digits --num=1000 --out=runs/digits/samples \
      [--seed=0] [--grid=karras|infogrid|infogrid_rescaled] [--method=heun|exp_heun|euler|...]
      [--steps=18] [--step=4000]

The run is rebuilt from `<workdir>/config.json` and its checkpoint (no training data is read:
the example shape is stored in the checkpoint's meta), the EMA parameters and schedule state
are restored, and the samples are drawn on device, sharded over every device in fixed-size
batches (one compile). Writes `<out>/samples.npz` (`samples`: float32 model output divided by
data.scale, so the data range is [-1, 1]; `uint8`: EDM's quantization of it) and, for images,
`<out>/samples.png`, a grid of the first (up to) 64; for token data (dna, text) also the
argmax ids `tokens` with the checkpoint's `vocab` in the .npz, and `<out>/samples.txt`.

Seeds: sample j of seed s starts from the key fold_in(key(s), j) (initial noise and any churn
noise), so it does not depend on the batch size, the device count or `--num` (a larger --num
extends the same set). The infogrid grids use the checkpoint's learned InfoNoise profile
(docs/method.md section 5).
"""

import argparse
import dataclasses
import functools
import io
import math
import os
import sys
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from infonoise_jax import checkpointing, cli, sampling, steps
from infonoise_jax.checkpointing import load_config
from infonoise_jax.data.tokens import TokenEncoding
from infonoise_jax.evaluation import fid, plots
from infonoise_jax.mesh import initialize_distributed, make_mesh
from infonoise_jax.models import make_model
from infonoise_jax.paths import run_path
from infonoise_jax.schedules import Schedule, make_schedule
from infonoise_jax.train_state import TrainState, abstract_state, make_optimizer

GRID_IMAGES = 64  # images in samples.png


@dataclasses.dataclass(frozen=True, eq=False)
class Sampler:
  """What drawing from a trained model needs (hashable by identity, for the jit cache)."""

  config: ml_collections.ConfigDict
  model: nn.Module
  schedule: Schedule
  mesh: jax.sharding.Mesh
  data_shape: tuple[int, ...]  # one example: (H, W, C) or (D,)
  vocab: str = ""  # token data: the run's vocabulary (checkpoint meta), for decoding

  @classmethod
  def from_run(cls, run) -> "Sampler":
    """From a `train.Run` (its mesh, model, schedule and the source's example shape)."""
    vocab = run.source.encoding.vocab if run.source.encoding is not None else ""
    return cls(run.config, run.model, run.schedule, run.mesh, tuple(run.source.shape), vocab)

  @property
  def is_image(self) -> bool:
    return len(self.data_shape) == 3

  @property
  def data_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P("data"))


def _no_checkpoint(directory: str) -> FileNotFoundError:
  return FileNotFoundError(
    f"No checkpoint in {directory}: train the run first "
    "(python -m infonoise_jax.main --workdir=...) or point --workdir at a trained run"
  )


def check_step(workdir: str, step: int | None = None) -> int:
  """The step to restore (latest if None), checked from the folder without reading it."""
  saved = checkpointing.saved_steps(workdir)
  if not saved:
    raise _no_checkpoint(os.path.join(workdir, "checkpoints"))
  if step is None:
    return saved[-1]
  if step not in saved:
    raise ValueError(f"--step={step}: no such checkpoint in {workdir}/checkpoints; saved: {saved}")
  return step


def _pick_step(ckpt: checkpointing.Checkpointer, step: int | None) -> int:
  saved = ckpt.all_steps()
  if not saved:
    raise _no_checkpoint(ckpt.directory)
  if step is None:
    return saved[-1]
  if step not in saved:
    raise ValueError(f"--step={step}: no such checkpoint in {ckpt.directory}; saved steps: {saved}")
  return step


def restore(
  workdir: str, step: int | None = None, devices: Sequence[jax.Device] | None = None
) -> tuple[Sampler, TrainState, int]:
  """Rebuilds a run from its workdir and restores the latest (or given) checkpoint.

  Returns (sampler, state, step); the state is replicated over `devices` (default: all).
  """
  config = load_config(workdir)
  if not (run_path(workdir) / "checkpoints").is_dir():
    raise _no_checkpoint(str(run_path(workdir) / "checkpoints"))
  ckpt = checkpointing.Checkpointer(workdir, config.train.keep_checkpoints, create=False)
  try:
    step = _pick_step(ckpt, step)
    meta = ckpt.restore_meta(step)
    data_shape = tuple(int(d) for d in meta["data_shape"])
    mesh = make_mesh(devices)
    model, schedule = make_model(config, data_shape), make_schedule(config)
    init = functools.partial(
      steps.init_state, config, model, schedule, make_optimizer(config), data_shape, config.seed
    )
    state, _ = ckpt.restore(abstract_state(init, NamedSharding(mesh, P())), step)
  finally:
    ckpt.close()
  return Sampler(config, model, schedule, mesh, data_shape, meta.get("vocab", "")), state, step


def sampler_config(
  config: ml_collections.ConfigDict,
  grid: str | None = None,
  num_steps: int | None = None,
  method: str | None = None,
) -> ml_collections.ConfigDict:
  """A copy of `config` with sampler.grid / num_steps / name overridden where given."""
  config = config.copy_and_resolve_references()
  if grid is not None:
    config.sampler.grid = grid
  if num_steps is not None:
    config.sampler.num_steps = int(num_steps)
  if method is not None:
    config.sampler.name = method
  return config


def make_sigmas(sampler: Sampler, schedule_state, config=None) -> jax.Array:
  """The sigma grid of `config.sampler` (default the run's); infogrid uses the learned profile."""
  config = sampler.config if config is None else config
  grid = config.sampler.grid
  if not grid.startswith("infogrid"):
    return sampling.make_sigmas(config)
  sampling.check_grid(sampler.config, grid)
  return sampling.make_sigmas(config, profile=sampler.schedule.profile(schedule_state))


def round_batch(sampler: Sampler, num: int, batch: int | None = None) -> int:
  """Batch per call: `batch` (default fid.batch_size), at most `num`, a multiple of devices."""
  batch = sampler.config.fid.batch_size if batch is None else batch
  n_dev = sampler.mesh.devices.size
  return math.ceil(max(1, min(batch, num)) / n_dev) * n_dev


@functools.cache
def _draw_fn(sampler: Sampler, batch: int):
  """Jitted (params, seed_key, start, sigmas) -> samples start .. start+batch-1, sharded."""
  s, shape = sampler.config.sampler, sampler.data_shape
  denoise = steps.make_denoiser(sampler.config, sampler.model)

  def draw(params, seed_key, start, sigmas):
    idx_B = jax.lax.with_sharding_constraint(start + jnp.arange(batch), sampler.data_sharding)
    keys_B = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(seed_key, idx_B)

    def one(key):  # one sample, its own key: independent of batch and layout
      fn = lambda x, sigma: denoise(params, x, sigma)
      kwargs = dict(s_churn=s.s_churn, s_tmin=s.s_tmin, s_tmax=s.s_tmax, s_noise=s.s_noise)
      return sampling.sample(fn, key, (1, *shape), sigmas, method=s.name, **kwargs)[0]

    return jax.vmap(one)(keys_B)

  return jax.jit(draw, out_shardings=sampler.data_sharding)


def draw(
  sampler: Sampler, params, sigmas: jax.Array, num: int, seed: int, batch: int | None = None
) -> Iterator[np.ndarray]:
  """Yields samples 0..num-1 of seed `seed` in batches, as numpy on every host (model units)."""
  batch = round_batch(sampler, num, batch)
  fn, key = _draw_fn(sampler, batch), jax.random.key(seed)
  for start in range(0, num, batch):
    x = fn(params, key, start, sigmas)
    yield np.asarray(multihost_utils.process_allgather(x, tiled=True))[: num - start]


def draw_all(sampler: Sampler, params, sigmas, num: int, seed: int, batch=None) -> np.ndarray:
  return np.concatenate(list(draw(sampler, params, sigmas, num, seed, batch)), axis=0)


def write_samples(out: str, samples: np.ndarray, scale: float, is_image: bool, **meta) -> dict:
  """Writes samples.npz (float in [-1, 1] data units, uint8) and samples.png; returns paths."""
  folder = run_path(out)
  folder.mkdir(parents=True, exist_ok=True)
  x = (np.asarray(samples, np.float32) / np.float32(scale)).astype(np.float32)
  written = {"npz": str(folder / "samples.npz")}
  buf = io.BytesIO()  # written in one piece, so remote (gs://) outputs work too
  np.savez(buf, samples=x, uint8=fid.to_uint8(x), data_scale=scale, **meta)
  (folder / "samples.npz").write_bytes(buf.getvalue())
  if is_image:
    written["png"] = str(folder / "samples.png")
    plots.save_png(written["png"], plots.sample_grid(x[:GRID_IMAGES]))
  return written


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
) -> tuple[np.ndarray, dict]:
  """The command: restore, draw `num` samples, write them to `out`; returns (samples, paths)."""
  if num < 1:
    raise ValueError(f"--num must be >= 1, got {num}")
  sampling.validate_sampler_config(sampler_config(load_config(workdir), grid, num_steps, method))
  sampler, state, step = restore(workdir, step, devices)
  config = sampler_config(sampler.config, grid, num_steps, method)
  sampler = dataclasses.replace(sampler, config=config)  # the draw function follows config
  sigmas = make_sigmas(sampler, state.schedule_state, config)
  samples = draw_all(sampler, state.ema_params, sigmas, num, seed, batch)
  paths = {}
  if jax.process_index() == 0:
    s = config.sampler
    meta = dict(seed=seed, step=step, grid=s.grid, num_steps=s.num_steps, method=s.name)
    if sampler.vocab:  # token data: ids by argmax and the vocabulary that reads them
      meta.update(tokens=TokenEncoding(sampler.vocab).decode(samples), vocab=sampler.vocab)
    paths = write_samples(out, samples, config.data.scale, sampler.is_image, **meta)
    if sampler.vocab:
      paths["txt"] = write_texts(out, sampler.vocab, meta["tokens"])
  return samples, paths


def write_texts(out: str, vocab: str, tokens_NL: np.ndarray) -> str:
  """samples.txt: each decoded sample, separated by a line of dashes."""
  path = os.path.join(out, "samples.txt")
  enc = TokenEncoding(vocab)
  with open(path, "w") as f:
    f.write("\n-----\n".join(enc.to_text(ids) for ids in tokens_NL) + "\n")
  return path


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog="python -m infonoise_jax.sample", description=__doc__.split("\n")[0]
  )
  p.add_argument("--workdir", required=True, help="training run directory")
  p.add_argument("--num", type=int, default=GRID_IMAGES, help="number of samples")
  p.add_argument("--out", default=None, help="output directory (default <workdir>/samples)")
  p.add_argument("--seed", type=int, default=0, help="sample j uses key fold_in(key(seed), j)")
  p.add_argument("--grid", choices=sampling.GRIDS, default=None, help="default: the run's")
  p.add_argument("--steps", type=int, default=None, help="sigma levels (default: the run's)")
  p.add_argument("--method", choices=sampling.METHODS, default=None, help="default: the run's")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--batch", type=int, default=None, help="samples per call (fid.batch_size)")
  p.add_argument("--debug", action="store_true", help="show the traceback of an error")
  p.add_argument(
    "--distributed",
    action="store_true",
    help="multi-host: call jax.distributed.initialize with the run's system.* settings "
    "(as training with --config.system.distributed=True; run on every host)",
  )
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  a = _parse(argv)
  cli.run_command(lambda: _command(a), a.debug)


def _command(a: argparse.Namespace) -> None:
  if a.distributed:  # the training run's multi-host start-up (system.*), before any JAX call
    initialize_distributed(load_config(a.workdir))
  out = a.out or os.path.join(a.workdir, "samples")
  samples, paths = sample_run(
    a.workdir, a.num, out, a.seed, a.grid, a.steps, a.step, a.batch, method=a.method
  )
  if jax.process_index() == 0:
    lines = [f"{len(samples)} samples of shape {samples.shape[1:]} from {a.workdir}:"]
    lines += [f"  {name:<4}: {path}" for name, path in paths.items()]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
