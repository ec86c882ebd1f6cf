"""Is a schedule right for this data? The entropy-rate profile from held-out denoising errors.

docs/method.md section 3: the conditional-entropy rate per unit ln sigma is q = mmse / sigma^2,
and a schedule's effective allocation phi = pi * lambda * w shows where it spends training
effort (lambda: the schedule's own loss weight, 1 but for VDM++ / iDDPM, base / pi, and EDM2,
exp(-u); with importance weights the objective follows the base law whatever pi learned).
This command estimates q on a ln-sigma grid from *held-out* denoising errors and compares any
list of schedules' phi against it:

  python -m infonoise_jax.diagnose --workdir=runs/fashion --out=runs/fashion/diagnose
  python -m infonoise_jax.diagnose --config=configs/default.py:fashion --prior=empirical \
      --out=/tmp/diag --schedules=lognormal,loguniform,infonoise

Denoisers: `model` (a trained run's EMA parameters, or its raw ones with --params=params), the
empirical-prior Bayes denoiser (`empirical`: the exact posterior mean when the prior is the
uniform distribution over up to --num_points training examples, evaluated on those same
points: the exact profile of that finite sample, which collapses below the nearest-neighbour
scale; held-out points would be misfit there, their error staying at the squared distance to
the nearest point, so q ~ 1/sigma^2 would blow up at low sigma), for
`gaussian_mixture` data the generating mixture's exact Bayes denoiser (`mixture`), and for
token data (DNA, text) the exact Bayes denoiser of independent positions with the training
split's symbol frequencies (`onehot`, the default there without --workdir: per position a
posterior over the V codewords, profiles.onehot_mmse's model, evaluated on held-out windows;
an upper bound on the true error, as context only helps). The empirical prior is a poor
stand-in for token data: a few thousand windows of L x V dimensions sit ~ sqrt(2 L) apart, so
its profile measures the distance between windows, not the per-position decision.

Comparison (all on the grid, each curve normalized to unit mass): the target is the gated
profile rho = q g(sigma; c) with c from --gate (by default the config's pinned pivot when its
InfoNoise gate is pinned, whatever schedule the run trained with, so every arm of one recipe
is diagnosed against one target; else the onset rule of profiles.py; or a number); for each
schedule, `mismatch` is the total variation between phi and rho (0 = same, 1 = disjoint) and
`in_window` the mass of phi inside the informative window, the ln-sigma interval holding the
central 80% of rho (10% to 90% of its CDF). Writes profile.npz, diagnose.md and diagnose.png
under --out, which must lie outside the data folder (data.path: they would be read as data).
"""

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from infonoise_jax import cli, edm, profiles, steps
from infonoise_jax.data import load_source, resolve_sigma_data
from infonoise_jax.data.sources import (
  DATA_LOCATION_KEYS,
  DATA_PATH_KEYS,
  TOKEN_NAMES,
  data_location_items,
)
from infonoise_jax.evaluation import plots
from infonoise_jax.schedules import FIXED, SCHEDULES, make_schedule, weighted_density
from infonoise_jax.validation import apply_overrides, load_config_file, validate_config
from infonoise_jax.workdir import check_outside_data

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_BX, sigma_B) -> E[x0 | x]
MIN_GRID_POINTS = 4  # --grid_points: 1 point gave every schedule a "perfect" match
WINDOW = (0.1, 0.9)  # CDF quantiles of the gated profile bounding the informative window


def error_profile(
  denoise: DenoiseFn, x0_NX: np.ndarray, sigma_G: np.ndarray, seed: int = 0, batch: int = 256
) -> np.ndarray:
  """Per-dim mean squared error of `denoise` on x0 + sigma eps, per sigma: m_G (float64).

  One jitted batch function; the last batch is padded and masked so nothing recompiles.
  """
  n = x0_NX.shape[0]
  batch = min(batch, n)

  @jax.jit
  def batch_sum(x0_BX, valid_B, sigma, key):
    eps_BX = jax.random.normal(key, x0_BX.shape, jnp.float32)
    sigma_B = jnp.full((x0_BX.shape[0],), sigma, jnp.float32)
    d_BX = denoise(edm.add_noise(x0_BX, sigma_B, eps_BX), sigma_B)
    return jnp.sum(jnp.where(valid_B, edm.per_example_error(d_BX, x0_BX), 0.0))

  key = jax.random.key(seed)
  m_G = np.zeros(len(sigma_G))
  for g, sigma in enumerate(sigma_G):
    total = 0.0
    for start in range(0, n, batch):
      x = x0_NX[start : start + batch]
      valid = np.arange(batch) < len(x)
      x = np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), x.dtype)])
      k = jax.random.fold_in(jax.random.fold_in(key, g), start)
      total += float(batch_sum(jnp.asarray(x, jnp.float32), valid, float(sigma), k))
    m_G[g] = total / n
  return m_G


def informative_window(log_sigma_G: np.ndarray, rho_G: np.ndarray) -> tuple[float, float]:
  """ln-sigma interval between the WINDOW quantiles of the profile's CDF on the grid."""
  cdf_G = np.cumsum(rho_G) / np.sum(rho_G)
  lo = log_sigma_G[int(np.searchsorted(cdf_G, WINDOW[0]))]
  hi = log_sigma_G[min(int(np.searchsorted(cdf_G, WINDOW[1])), len(cdf_G) - 1)]
  return float(lo), float(hi)


@dataclasses.dataclass(frozen=True)
class Comparison:
  name: str
  mismatch: float  # total variation between phi = pi w and the gated profile, in [0, 1]
  in_window: float  # mass of phi inside the informative window
  peak_sigma: float  # sigma where phi is largest


def compare(name: str, log_sigma_G, density_G, rho_G, sigma_data: float) -> Comparison:
  """Effective allocation of a ln-sigma density against the gated profile."""
  phi_G = np.asarray(profiles.effective_allocation(log_sigma_G, density_G, sigma_data))
  lo, hi = informative_window(log_sigma_G, rho_G)
  inside = (log_sigma_G >= lo) & (log_sigma_G <= hi)
  return Comparison(
    name=name,
    mismatch=float(profiles.allocation_mismatch(phi_G, rho_G)),
    in_window=float(np.sum(phi_G[inside])),
    peak_sigma=float(np.exp(log_sigma_G[int(np.argmax(phi_G))])),
  )


def gate_pivot(log_sigma_G, q_G, gate: str, threshold: float) -> float:
  """c from --gate: 'onset' (profiles.onset_pivot), 'none' (no gate: 0) or a number."""
  if gate == "onset":
    return float(profiles.onset_pivot(jnp.asarray(log_sigma_G), jnp.asarray(q_G), threshold))
  if gate == "none":
    return 0.0
  try:
    c = float(gate)
  except ValueError:
    raise ValueError(f"--gate must be onset, none or a pivot sigma > 0, got {gate!r}") from None
  if c <= 0:
    raise ValueError(f"--gate must be onset, none or a pivot sigma > 0, got {gate!r}")
  return c


def check_gate(gate: str, config) -> None:
  """A numeric --gate must lie in the run's noise range: outside it the gate is ~0 or ~1 at
  every sigma and every schedule would be judged against a meaningless target."""
  if gate in ("onset", "none"):
    return
  c = gate_pivot(None, None, gate, 0.0)  # parses, and refuses a non-positive pivot
  lo, hi = config.edm.sigma_min, config.edm.sigma_max
  if not lo <= c <= hi:
    raise ValueError(
      f"--gate={gate} is outside the noise range [edm.sigma_min, edm.sigma_max] = [{lo:g}, "
      f"{hi:g}]; give a pivot inside it (0.15 natural images, 0.2 other data), onset or none"
    )


def gated(log_sigma_G, q_G, pivot: float, power: float = 3.0) -> np.ndarray:
  if pivot <= 0:
    return np.asarray(profiles.normalize(jnp.asarray(q_G)))
  return np.asarray(
    profiles.gated_profile(jnp.asarray(log_sigma_G), jnp.asarray(q_G), pivot, power)
  )


def schedule_densities(config, names: Sequence[str], log_sigma_G, run_state=None) -> dict:
  """{label: density of ln sigma on the grid, times the schedule's own loss weight where it has
  one (VDM++ / iDDPM base/pi, EDM2 exp(-u): `weighted_density`), so that times w it is the
  allocation the gradient sees}. 'run' is the trained run's own schedule state
  (labelled with its schedule); an adaptive schedule named here has no trained state, so it is
  its initial law (its warm-up base for InfoNoise) and is labelled so."""
  out = {}
  for name in names:
    if name == "run":
      if run_state is None:
        raise ValueError("--schedules=run needs --workdir (a trained run's schedule state)")
      sched, state = run_state
      label = f"run ({config.schedule.name}, as trained)"
    else:
      c = ml_collections.ConfigDict(config.to_dict())
      c.schedule.name = name
      sched = make_schedule(c)  # unknown names fail here with the valid list
      state = sched.init_state()  # adaptive schedules: their initial (base) law
      label = name if name in FIXED else f"{name} (initial law, untrained)"
    grid_G = jnp.asarray(log_sigma_G, jnp.float32)
    out[label] = np.asarray(weighted_density(sched, state, grid_G))  # pi * the own weights
  return out


def make_denoiser(config, source, prior: str, num_points: int, trained=None) -> DenoiseFn:
  """The denoiser named by --prior (module docstring)."""
  if prior == "model":
    if trained is None:
      raise ValueError("--prior=model needs --workdir (a trained run)")
    model, params = trained
    d = steps.make_denoiser(config, model)
    return lambda x, s: d(params, x, s)
  flat = lambda x: x.reshape(x.shape[0], -1)
  if prior == "mixture":
    mix = source.mixture
    if mix is None:
      raise ValueError(f"--prior=mixture needs data.name=gaussian_mixture; got {source.name!r}")
    means = jnp.asarray(mix.means_KD, jnp.float32)
    stds = jnp.full((len(mix.weights_K),), mix.std, jnp.float32)
    w = jnp.asarray(mix.weights_K, jnp.float32)
    return lambda x, s: profiles.mixture_denoiser(flat(x), s, means, stds, w).reshape(x.shape)
  if prior == "empirical":
    n = min(num_points, source.num_examples)
    idx = np.sort(np.random.default_rng(0).choice(source.num_examples, n, replace=False))
    pts = jnp.asarray(flat(source.get(idx)), jnp.float32)  # same points as diagnose() uses
    z, w = jnp.zeros((n,)), jnp.full((n,), 1.0 / n)
    return lambda x, s: profiles.mixture_denoiser(flat(x), s, pts, z, w).reshape(x.shape)
  if prior == "onehot":
    if source.encoding is None:
      raise ValueError(
        f"--prior=onehot needs token data (data.name dna or text); got {source.name!r}: use "
        "--prior=empirical for images"
      )
    v = source.encoding.size
    counts = np.bincount(np.asarray(source.token_ids).ravel(), minlength=v)
    log_p = jnp.log(jnp.maximum(jnp.asarray(counts / counts.sum(), jnp.float32), 1e-30))
    codewords_VV = jnp.asarray(source.encoding.codewords())
    return lambda x, s: onehot_denoiser(x, s, codewords_VV, log_p)
  raise ValueError(f"--prior must be model, empirical, mixture or onehot; got {prior!r}")


def onehot_denoiser(x_NLV, sigma_N, codewords_VV, log_p_V):
  """Posterior mean of independent one-hot positions (profiles.onehot_posterior), per position."""
  sigma_N1 = jnp.reshape(sigma_N, (-1, 1))
  return profiles.onehot_posterior(x_NLV, sigma_N1, codewords_VV, log_p_V) @ codewords_VV


def held_out(config, num: int) -> tuple[np.ndarray, str]:
  """Up to `num` examples of the test split (or, with none, the training split; said so)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.data.split = "test"
  try:
    src, split = load_source(c), "test"
  except ValueError:
    src, split = load_source(config), "train"
  idx = np.random.default_rng(1).choice(src.num_examples, min(num, src.num_examples), False)
  return src.get(np.sort(idx)), split


def markdown(rows: Sequence[Comparison], pivot: float, window, split: str, prior: str) -> str:
  where = {
    "test": "held-out denoising errors (test split)",
    "train": "denoising errors on training examples (the data has no test split)",
  }.get(split, f"denoising errors ({split} split)")
  lines = [
    f"Profile from {where}, denoiser: {prior}; gate pivot "
    f"c = {pivot:.4g}; informative window sigma in [{math.exp(window[0]):.3g}, "
    f"{math.exp(window[1]):.3g}] (central 80% of the gated profile). Allocation phi = pi * "
    "lambda * w: the sampling density, the schedule's own loss weight (1 but for VDM++ / iDDPM "
    "base/pi and EDM2 exp(-u)) and EDM's w.",
    "",
    "| schedule | mismatch (TV, 0 = matches) | allocation mass in window | allocation peak sigma |",
    "|---|---|---|---|",
  ]
  for r in rows:
    lines.append(f"| {r.name} | {r.mismatch:.3f} | {r.in_window:.3f} | {r.peak_sigma:.3g} |")
  return "\n".join(lines)


def diagnose(
  config,
  out: str,
  schedules: Sequence[str],
  prior: str,
  num_heldout: int = 1000,
  num_points: int = 2000,
  grid_points: int = 64,
  gate: str = "onset",
  trained=None,
  run_state=None,
  batch: int = 256,
  source=None,
) -> dict:
  """Computes the profile and the comparison; writes profile.npz, diagnose.md, diagnose.png.
  `source`: the config's data, when the caller loaded it already."""
  check_gate(gate, config)  # before the data or the denoiser
  # profile.npz and diagnose.png among the data would be read as data by the next run or resume
  check_outside_data(out, config.data.get("path", ""), "--out")
  source = load_source(config) if source is None else source
  resolve_sigma_data(config, source.encoding)  # token data: edm.sigma_data = 0 -> one-hot std
  if prior == "empirical" and source.encoding is not None:
    print(
      "warning: --prior=empirical on token data measures the distance between windows, not the "
      "per-position decision (module docstring); --prior=onehot gives the independent-positions "
      "profile, --workdir a trained model's",
      file=sys.stderr,
      flush=True,
    )
  if prior == "empirical" and min(num_points, source.num_examples) < 2:
    raise ValueError(
      f"--prior=empirical with {min(num_points, source.num_examples)} data point: a one-point "
      "prior denoises every noisy example back to that point exactly, so every error is 0 and "
      f"there is no profile (data.name={config.data.name!r} gives {source.num_examples} "
      f"examples, --num_points={num_points}); give it at least 2 points"
    )
  denoise = make_denoiser(config, source, prior, num_points, trained)
  if prior == "empirical":  # the prior's own points (module docstring)
    n = min(num_points, source.num_examples)
    idx = np.sort(np.random.default_rng(0).choice(source.num_examples, n, replace=False))
    x0, split = source.get(idx[: min(num_heldout, n)]), "train (the empirical prior's own points)"
  else:
    x0, split = held_out(config, num_heldout)
  lo, hi = math.log(config.edm.sigma_min), math.log(config.edm.sigma_max)
  log_sigma_G = np.linspace(lo, hi, grid_points)
  sigma_G = np.exp(log_sigma_G)
  densities = schedule_densities(config, schedules, log_sigma_G, run_state)
  m_G = error_profile(denoise, x0, sigma_G, config.seed, batch)
  finite = np.all(np.isfinite(m_G))
  if not finite or m_G.max() <= 1e-9 * config.edm.sigma_data**2:  # 0 up to float rounding
    raise ValueError(
      f"the {prior} denoiser's errors on {len(x0)} examples are "
      f"{'not finite' if not finite else f'0 at every sigma (at most {m_G.max():.2g})'}, so "
      "there is no profile to compare schedules against (identical examples give 0 with "
      "--prior=empirical; a diverged run gives NaN with --workdir)"
    )
  q_G = m_G / sigma_G**2
  threshold = config.schedule.infonoise.onset_threshold
  pivot = gate_pivot(log_sigma_G, q_G, gate, threshold)
  rho_G = gated(log_sigma_G, q_G, pivot, config.schedule.infonoise.gate_power)
  sd = config.edm.sigma_data
  rows = [compare(n, log_sigma_G, d, rho_G, sd) for n, d in densities.items()]
  window = informative_window(log_sigma_G, rho_G)
  os.makedirs(out, exist_ok=True)
  np.savez(
    os.path.join(out, "profile.npz"), log_sigma=log_sigma_G, mmse=m_G, q=q_G, rho=rho_G, pivot=pivot
  )
  text = markdown(rows, pivot, window, split, prior)
  with open(os.path.join(out, "diagnose.md"), "w") as f:
    f.write(text + "\n")
  w_G = np.asarray(edm.loss_weight(jnp.asarray(sigma_G), sd))
  curves = {"entropy-rate profile q (ungated)": q_G, "gated profile rho": rho_G}
  curves.update({f"{n}: phi = pi*lambda*w": d * w_G for n, d in densities.items()})
  markers = {"gate pivot ln c": math.log(pivot)} if pivot > 0 else {}
  img = plots.schedule_plot(log_sigma_G, curves, "profile vs effective allocation", markers=markers)
  plots.save_png(os.path.join(out, "diagnose.png"), img)
  return {
    "log_sigma": log_sigma_G,
    "mmse": m_G,
    "q": q_G,
    "rho": rho_G,
    "pivot": pivot,
    "rows": rows,
    "markdown": text,
  }


def _from_workdir(workdir: str, params: str, overrides=(), gate: str = "", out: str = ""):
  """(config, (model, params), (schedule, state), step, source) of a run; `overrides` move its data
  (DATA_LOCATION_KEYS), checked to load before the checkpoint is restored, as are a `gate`
  given on the command line (its range is the run's noise range) and the output folder `out`
  (not inside the run's data folder)."""
  from infonoise_jax import restore, resume

  config = restore.load_config(workdir, overrides)
  if gate:
    check_gate(gate, config)
  if out:
    check_outside_data(out, config.data.get("path", ""), "--out")
  step = restore.check_step(workdir)
  meta = restore.saved_meta(workdir, step)
  # the data is there, readable, of the run's vocabulary and shape, before the weights
  source = resume.source_on_saved_vocabulary(config, meta.get("vocab"), workdir, step)
  resume.warn_if_held_out_changed(config, source, meta, workdir, step)
  restore.check_data_shape(workdir, config, source.shape, meta["data_shape"])
  run = restore.restore_run(workdir, devices=jax.devices()[:1])
  chosen = run.state.ema_params if params == "ema" else run.state.params
  for key in DATA_PATH_KEYS:  # where the data lies now, made absolute by load_config
    run.config.data[key] = config.data[key]
  run.config.data.vocab = config.data.vocab  # the checkpoint's, if the files lost letters
  trained = (run.model, chosen)
  return run.config, trained, (run.schedule, run.state.schedule_state), run.step, source


def parse(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    "--out", default="", help="output folder (default <workdir>/diagnose; needed with --config)"
  )
  p.add_argument("--workdir", default="", help="a trained run (its config and checkpoint)")
  p.add_argument("--config", default="", help="path[:variant], for a dataset alone")
  p.add_argument(
    "--set",
    action="append",
    help="with --config: a config override key=value (repeatable), e.g. data.name=images "
    "then data.path=x.npy; with --workdir: where the run's data now lies (data.path, "
    "data.local_dir, data.tfds_data_dir)",
  )
  p.add_argument(
    "--prior",
    default="",
    choices=("", "model", "empirical", "mixture", "onehot"),
    help="model | empirical | mixture | onehot; '' = model with --workdir, else onehot for "
    "token data and empirical otherwise",
  )
  p.add_argument("--params", default="ema", choices=("ema", "params"))
  p.add_argument("--schedules", default="lognormal,loguniform,infonoise")
  p.add_argument(
    "--gate",
    default="",
    help="onset | none | a pivot sigma; '' = the config's pinned pivot when its InfoNoise gate is "
    "pinned, else onset",
  )
  p.add_argument("--num_heldout", type=cli.positive_int, default=1000)
  p.add_argument(
    "--num_points", type=cli.positive_int, default=2000, help="empirical prior: data points"
  )
  p.add_argument("--grid_points", type=int, default=64, help=f">= {MIN_GRID_POINTS}")
  p.add_argument(
    "--batch", type=cli.positive_int, default=256, help="held-out examples per denoiser call"
  )
  p.add_argument("--debug", action="store_true", help="show the traceback of an error")
  args = p.parse_args(argv)
  if bool(args.workdir) == bool(args.config):
    p.error("give exactly one of --workdir (a trained run) or --config (a dataset alone)")
  if not args.out:
    if not args.workdir:
      p.error("--config needs --out=<folder> for the profile, table and plot")
    args.out = os.path.join(args.workdir, "diagnose")
  location = data_location_items(args.set or [])
  other = [o for o in args.set or [] if o not in location]
  if args.workdir and other:
    p.error(
      f"--set {other[0]}: with --workdir only where the run's data now lies may change "
      f"({', '.join(DATA_LOCATION_KEYS)}; e.g. --set data.path=<new place>); the rest of a "
      "run's config is its own"
    )
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    p.error(f"--out={args.out} is a file: give a folder for the profile, table and plot")
  if args.grid_points < MIN_GRID_POINTS:
    p.error(f"--grid_points must be >= {MIN_GRID_POINTS} (a profile needs a grid), got "
            f"{args.grid_points}")  # fmt: skip
  if not any(args.schedules.split(",")):
    p.error(
      f"--schedules={args.schedules!r} names no schedule: give at least one, e.g. "
      "--schedules=lognormal,infonoise (run: the trained run's own, with --workdir)"
    )
  unknown = [n for n in args.schedules.split(",") if n and n != "run" and n not in SCHEDULES]
  if unknown:
    p.error(
      f"--schedules: unknown {', '.join(map(repr, unknown))}; known: "
      f"{', '.join(sorted(SCHEDULES))} and run (the trained run's own, with --workdir)"
    )
  if args.prior == "model" and not args.workdir:
    p.error("--prior=model needs --workdir (a trained run)")
  if args.gate not in ("", "onset", "none"):
    try:
      gate_pivot(None, None, args.gate, 0.0)  # parses a numeric pivot, refuses one <= 0
    except ValueError as e:
      p.error(str(e))
  return args


def main(argv=None) -> None:
  args = parse(argv)
  cli.run_command(lambda: _command(args), args.debug, takes_set=True)


def _command(args: argparse.Namespace) -> None:
  trained = run_state = source = None
  if args.workdir:
    config, trained, run_state, step, source = _from_workdir(
      args.workdir, args.params, args.set, args.gate, args.out
    )
    print(f"restored {args.workdir} at step {step}", flush=True)
  else:
    path, _, variant = args.config.partition(":")
    config = load_config_file(path, variant) if variant else load_config_file(path)
    apply_overrides(config, args.set)
    # as training does: a bad key named before any work (one device: diagnose's own --batch,
    # not train.batch_size, meets the devices)
    validate_config(config, 1)
  tokens = config.data.name in TOKEN_NAMES
  prior = args.prior or ("model" if args.workdir else "onehot" if tokens else "empirical")
  gate = args.gate
  if not gate:  # the recipe's InfoNoise gate, whichever schedule this run trained with: the
    # arms of one recipe (log-normal beside InfoNoise) are then diagnosed against one target
    rule = config.schedule.infonoise.gate
    gate = {"pinned": str(config.schedule.infonoise.gate_pivot), "none": "none"}.get(rule, "onset")
  names = [n for n in args.schedules.split(",") if n]
  if args.workdir and "run" not in names:
    names.append("run")
  r = diagnose(
    config,
    args.out,
    names,
    prior,
    args.num_heldout,
    args.num_points,
    args.grid_points,
    gate,
    trained,
    run_state,
    args.batch,
    source,
  )
  print(r["markdown"])
  print(json.dumps({"out": os.path.abspath(args.out), "pivot": r["pivot"]}))


if __name__ == "__main__":
  sys.exit(main())
