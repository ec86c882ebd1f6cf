"""What a run shows its user: window scalars, sample grids, the schedule plot.

The schedule plot is docs/method.md section 3's diagnostic: on a ln-sigma axis, the sampling
density pi, the effective allocation pi*w (pi*lambda*w for a schedule that weights its own
draws: VDM++ and iDDPM by base/pi, EDM2 by exp(-u)) and (for InfoNoise) the estimated gated
entropy-rate profile, each normalized on the grid so they can be compared.
"""

import io
import os
import shlex

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from infonoise_jax import edm, log_sigma
from infonoise_jax.evaluation import plots, sequence_eval
from infonoise_jax.paths import run_path
from infonoise_jax.sample_files import data_record, write_samples, write_texts
from infonoise_jax.schedules import HasLossWeights, has_profile, weighted_density


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
  weighted_G = np.asarray(weighted_density(schedule, schedule_state, grid_G))  # pi * lambda
  w_G = np.asarray(edm.loss_weight(jnp.exp(grid_G), config.edm.sigma_data))
  # lambda: VDM++ / iDDPM base/pi, EDM2 exp(-u); 1 for the others (the label says which).
  label = "pi*lambda*w" if isinstance(schedule, HasLossWeights) else "pi*w"
  curves = {"sampling density pi": density_G, f"effective allocation {label}": weighted_G * w_G}
  if has_profile(schedule):
    log_sigma_K, rho_K = schedule.profile(schedule_state)
    curves["estimated profile (gated)"] = np.interp(grid_G, log_sigma_K, rho_K)
  return np.asarray(grid_G), curves


HISTORY_POINTS = 128  # ln-sigma grid of the schedule-history heatmap


def history_grid(config: ml_collections.ConfigDict) -> np.ndarray:
  lo, hi = np.log(log_sigma.sigma_range(config))
  return np.linspace(lo, hi, HISTORY_POINTS)


HISTORY_FILE = "schedule_history.npz"  # the heatmap's rows so far, kept across resumes


def save_history(workdir: str, history: list[tuple[int, np.ndarray]], upto: int) -> None:
  """Writes the schedule-history rows of steps <= `upto` (a checkpoint's step) to
  `<workdir>/schedule_history.npz` (process 0; one piece, so gs:// works too): a resume from
  that checkpoint reads them back (`load_history`) and its heatmap keeps the steps before."""
  rows = [(s, c) for s, c in history if s <= upto]
  if not rows or jax.process_index() != 0:
    return
  buf = io.BytesIO()
  np.savez(buf, steps=np.array([s for s, _ in rows]), curves=np.stack([c for _, c in rows]))
  (run_path(workdir) / HISTORY_FILE).write_bytes(buf.getvalue())


def load_history(workdir: str, upto: int) -> list[tuple[int, np.ndarray]]:
  """The rows `save_history` kept, of steps <= `upto` (the step resumed from; rows an earlier
  attempt kept past it are dropped); [] when there are none, or, with a warning, when the
  file cannot be read or has another grid (the heatmap then starts at the resume)."""
  path = run_path(workdir) / HISTORY_FILE
  if upto <= 0:
    return []
  if not path.exists():  # older code did not save the rows, or no log window had ended
    logging.info(
      "%s holds no rows up to step %d (a run started by older code, or checkpointed before "
      "its first log window): the schedule-history plot starts at the resume; TensorBoard "
      "keeps the plots drawn before it",
      path,
      upto,
    )
    return []
  try:
    with np.load(io.BytesIO(path.read_bytes())) as z:
      steps, curves = z["steps"], z["curves"]
    if curves.ndim != 2 or curves.shape != (len(steps), HISTORY_POINTS):
      raise ValueError(f"rows of shape {curves.shape}, not (n, {HISTORY_POINTS})")
  except Exception as e:  # a damaged file costs the heatmap's past, never the run
    logging.warning("%s not read (%s): the schedule-history plot starts at step %d", path, e, upto)
    return []
  return [(int(s), c) for s, c in zip(steps, curves, strict=True) if s <= upto]


def history_curve(run, schedule_state) -> jax.Array:
  """The curve one heatmap row shows, on device (fetched later with the window's metrics):
  the gated profile for schedules that learn one, else the sampling density."""
  grid_G = jnp.asarray(history_grid(run.config), jnp.float32)
  if has_profile(run.schedule):
    log_sigma_K, rho_K = run.schedule.profile(schedule_state)
    return jnp.interp(grid_G, log_sigma_K, rho_K)
  return run.schedule.density(schedule_state, grid_G)


def _markers(config, schedule_state) -> dict[str, float]:
  """ln sigma_data, and InfoNoise's gate pivot ln c (the value in use) when it has one."""
  markers = {"ln σ_data": float(np.log(config.edm.sigma_data))}
  if isinstance(schedule_state, dict) and "gate_pivot" in schedule_state:
    markers["gate pivot ln c"] = float(np.log(jax.device_get(schedule_state["gate_pivot"])))
  return markers


def write_images(run, state, writer, workdir: str, step: int, log=None) -> tuple[dict, np.ndarray]:
  """Pictures to TensorBoard and PNG files; returns (paths, samples).

  The schedule plot (gate pivot and sigma_data marked), a sample grid (images) or scatter plot
  (2-D data) from the fixed seed `config.seed` (so they compare across steps), and, given the
  window logger `log`, the loss against ln sigma of the latest window (`log.loss_for_plot`:
  the steps so far before the process's first window) and the schedule's history as a
  heatmap.
  """
  config = run.config
  samples = run.sampler.draw_ema(state, config.train.num_samples, config.seed)
  grid_G, curves = schedule_curves(config, run.schedule, state.schedule_state)
  title = f"{config.schedule.name} @ step {step}"
  markers = _markers(config, state.schedule_state)
  images = {"schedule": plots.schedule_plot(grid_G, curves, title=title, markers=markers)}
  if run.source.is_image:
    scale = run.source.scale
    images["samples"] = plots.sample_grid(samples, value_range=(-scale, scale))
  elif tuple(run.source.shape) == (2,):
    reference = run.source.array[:2000] if run.source.array is not None else None
    images["samples"] = plots.scatter_plot(samples, reference, title=f"samples @ step {step}")
  losses = None if log is None else log.loss_for_plot()
  if losses is not None:
    edges, loss = losses
    images["loss_by_log_sigma"] = plots.loss_by_noise_plot(edges, loss, title=title)
  if log is not None and len(log.history) >= 2:
    steps_T, rows = zip(*log.history, strict=True)
    what = "profile" if has_profile(run.schedule) else "sampling density"
    images["schedule_history"] = plots.heatmap_plot(
      history_grid(config), steps_T, np.stack(rows), title=f"{config.schedule.name}: {what}"
    )
  writer.write_images(step, {name: img[None] for name, img in images.items()})
  if run.source.encoding is not None:  # token data: the samples decoded by argmax, as text
    writer.write_texts(step, {"samples": sample_texts(run.source.encoding, samples)})
  paths = {}
  if jax.process_index() == 0:
    folder = run_path(workdir) / "images"  # save_png makes it; remote URLs kept as they are
    for name, img in images.items():
      paths[name] = str(folder / f"{name}_{step:07d}.png")
      plots.save_png(paths[name], img)
  return paths, samples


def sample_texts(encoding, samples_NLV: np.ndarray, num: int = 8) -> str:
  """The first `num` samples decoded to their symbols, as TensorBoard markdown."""
  texts = [encoding.to_text(ids) for ids in encoding.decode(samples_NLV[:num])]
  return sequence_eval.format_texts(texts)


def write_final(run, state, writer, workdir: str, step: int, log=None) -> None:
  """Final images plus an .npz of samples; prints where everything is."""
  paths, samples = write_images(run, state, writer, workdir, step, log)
  if jax.process_index() != 0:
    return
  s = run.config.sampler
  extra = {}
  if run.source.encoding is not None:  # decoded tokens and the vocabulary that reads them
    extra = dict(tokens=run.source.encoding.decode(samples), vocab=run.source.encoding.vocab)
  if extra:  # token data: the decoded samples as text or FASTA, as the sample command writes them
    dna = run.config.data.name == "dna"
    paths["samples (.fa)" if dna else "samples (.txt)"] = write_texts(
      workdir, extra["vocab"], extra["tokens"], dna, seed=run.config.seed, step=step
    )
  written = write_samples(  # the sample command's format (and the same png); samples.npz last,
    workdir,  # so a run stopped while writing these writes them again (train._train)
    samples,
    run.config.data.scale,
    run.source.is_image,
    seed=run.config.seed,
    step=step,
    grid=s.grid,
    num_steps=s.num_steps,
    method=s.name,
    **extra,
    **(data_record(run.config.data) if run.source.is_image else {}),
  )
  npz = written["npz"]
  logging.info("Done at step %d.", step)
  lines = [
    f"Finished {step} steps. Outputs in {run_path(workdir)}:",
    f"  TensorBoard logs : {os.path.join(workdir, 'tensorboard')}  "
    f"(tensorboard --logdir {shlex.quote(os.path.join(workdir, 'tensorboard'))})",
    f"  checkpoints      : {os.path.join(workdir, 'checkpoints')}",
    f"  samples (.npz)   : {npz}",
  ]
  lines += [f"  {name:<17}: {p}" for name, p in paths.items()]
  print("\n".join(lines), flush=True)
