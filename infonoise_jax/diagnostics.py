"""What a run shows its user: window scalars, sample grids, the schedule plot.

The schedule plot is docs/method.md section 3's diagnostic: on a ln-sigma axis, the sampling
density pi, the effective allocation pi*w and (for InfoNoise) the estimated gated
entropy-rate profile, each normalized on the grid so they can be compared.
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from infonoise_jax import edm, log_sigma, sample
from infonoise_jax.evaluation import plots
from infonoise_jax.schedules import has_profile


def loss_bin_edges(config: ml_collections.ConfigDict) -> np.ndarray:
  """Edges (profile_bins + 1,) in ln sigma of the per-noise-bin loss summary (steps.py)."""
  return log_sigma.LogSigmaGrid.from_config(config, config.train.profile_bins).edges_np()


def schedule_curves(config, schedule, schedule_state, num: int = 256):
  """Curves on a ln-sigma grid: density pi, effective allocation pi*w, InfoNoise profile.

  Unnormalized; `plots.schedule_plot` normalizes each on the grid so they compare.
  """
  lo, hi = np.log(log_sigma.sigma_range(config))
  grid_G = jnp.linspace(lo, hi, num)
  density_G = np.asarray(schedule.density(schedule_state, grid_G))
  w_G = np.asarray(edm.loss_weight(jnp.exp(grid_G), config.edm.sigma_data))
  curves = {"sampling density pi": density_G, "effective allocation pi*w": density_G * w_G}
  if has_profile(schedule):
    log_sigma_K, rho_K = schedule.profile(schedule_state)
    curves["estimated profile (gated)"] = np.interp(grid_G, log_sigma_K, rho_K)
  return np.asarray(grid_G), curves


@functools.cache
def _sampler(run) -> sample.Sampler:
  """One Sampler per run, so its jitted draw function compiles once."""
  return sample.Sampler.from_run(run)


def generate_samples(run, state, num: int, seed: int) -> np.ndarray:
  """`num` samples from the EMA model, the same way the `sample` command draws them."""
  sampler = _sampler(run)
  sigmas = sample.make_sigmas(sampler, state.schedule_state)
  return sample.draw_all(sampler, state.ema_params, sigmas, num, seed)


def write_images(run, state, writer, workdir: str, step: int) -> tuple[dict, np.ndarray]:
  """Sample grid and schedule plot to TensorBoard and PNG files; returns paths, samples."""
  paths = {}
  samples = generate_samples(run, state, run.config.train.num_samples, run.config.seed + step)
  grid_G, curves = schedule_curves(run.config, run.schedule, state.schedule_state)
  plot = plots.schedule_plot(grid_G, curves, title=f"{run.config.schedule.name} @ step {step}")
  images = {"schedule": plot[None]}
  if run.source.is_image:
    scale = run.source.scale
    images["samples"] = plots.sample_grid(samples, value_range=(-scale, scale))[None]
  writer.write_images(step, images)
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, "images"), exist_ok=True)
    for name, img in images.items():
      paths[name] = os.path.join(workdir, "images", f"{name}_{step:07d}.png")
      plots.save_png(paths[name], img[0])
  return paths, samples


def write_final(run, state, writer, workdir: str, step: int) -> None:
  """Final images plus an .npz of samples; prints where everything is."""
  paths, samples = write_images(run, state, writer, workdir, step)
  if jax.process_index() != 0:
    return
  s = run.config.sampler
  written = sample.write_samples(  # the sample command's format (and the same png)
    workdir,
    samples,
    run.config.data.scale,
    run.source.is_image,
    seed=run.config.seed,
    step=step,
    grid=s.grid,
    num_steps=s.num_steps,
    method=s.name,
  )
  npz = written["npz"]
  logging.info("Done at step %d.", step)
  lines = [
    f"Finished {step} steps. Outputs in {os.path.abspath(workdir)}:",
    f"  TensorBoard logs : {os.path.join(workdir, 'tensorboard')}  "
    f"(tensorboard --logdir {workdir})",
    f"  checkpoints      : {os.path.join(workdir, 'checkpoints')}",
    f"  samples (.npz)   : {npz}",
  ]
  lines += [f"  {name:<17}: {p}" for name, p in paths.items()]
  print("\n".join(lines), flush=True)
