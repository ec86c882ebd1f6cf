"""Compare training noise schedules on one recipe: quality against training steps, by seed.

Arms (schedule x config overrides) x seeds on one dataset at a fixed budget, with the same
network, optimizer, EMA and sampler for every arm. The seeds of an arm train side by side in
one jitted step vmapped over a run axis (`infonoise_jax.multirun`); arms run one after another,
or in `--workers` processes sharing the accelerator (each with an equal memory fraction) or
dealt out over several GPUs (`--worker_gpus`).
Every `--eval_every` steps each run draws `--num_samples` samples from its EMA model and the
Frechet distance (FD) between sample and data statistics is measured in pixel space (lower is
better; binarized data also gets `fd_decoded`, the FD of samples thresholded to the two
levels). At the last step each run is evaluated a second time with other sample seeds: the
mean |difference| is the metric's noise, the tolerance of the speedup (evaluation/speedup.py;
with one draw for every step, less the part every run shares, `report.metric_noise`).
A `floor` record holds the FD of `--num_samples` real images to the data statistics: what a
perfect model would score. Token data (`--data=native` with configs/dna.py or text.py) is
scored with its domain metrics instead (evaluation/sequence_eval.py: DNA ranks by the
classifier-feature Frechet distance, text by the longest n-gram's JS divergence) against as
many held-out windows, the floor being other held-out windows. `--grid_steps` adds, for arms
with a learned profile, the FD of each (solver, grid) at those level counts on the final
models; `--save_samples` writes the final samples as uint8 for Inception FID elsewhere
(experiments/fid_of_samples.py): the evaluation's own samples, or `--save_num` samples drawn
apart with their own seeds (e.g. 10k for Inception FID beside 1k for the cheap curve), at the
last step or at each of `--save_steps`, into `--samples_dir` (default --out; each file
records the data it was trained on, which fid_of_samples.py checks against its reference); with
`--grid_steps` also the grid study's `--grid_samples` per setting (grid_<data>_<arm>.npz, each
setting scored as an arm named <arm>@<solver>-<grid>-<levels>). One process with
the seeds vmapped (`--workers=1`) is the measured choice on a GPU (experiments/RESULTS.md
section 9; for the sequence transformer, four processes sharing an H200 had not reached step
1,000 after 470 s, while one process trained 4,000 steps of 3 seeds in 171-176 s, section 18).
`--fid_records` (the output of fid_of_samples.py on those samples) adds an Inception
FID section per data kind to the report. `--state_dir` keeps each arm's training state at every
evaluation step (before its evaluations are written: a kill while evaluating loses no
training, and the rerun writes the missing records first), so a rerun of the same command
(after a kill, or a call that ended at `--stop_at` or `--time_limit`) trains on from there: a
budget longer than one session or call is run in parts. Compiled programs go to the persistent
compilation cache of the config's `system.compilation_cache_dir` (as the trainer's; `--set=
system.compilation_cache_dir=` turns it off), so such a later call on the same machine loads
them instead of compiling again.
If --out holds an arm's evaluations but --state_dir has no state for it (the machine that kept
it went back), the rerun stops before any work instead of training from step 0 again
(`--restart_lost_state` does that anyway).
An evaluation draws its samples from the same seeds for every arm and training seed, so arms
compare paired at each step; by default (`--eval_draw=fixed`) also the same seeds at every step,
so a curve's steps compare paired too: with a new draw per step (`per_step`, seed 10,000 + step,
the harness's rule before RESULTS.md section 28) one unlucky draw moves every run at that step
alike (section 27). `--speedup_tail` keeps any one evaluation from setting the speedup's target
alone (experiments/eval_draw_study.py measures how far draws move a model's metric).

  python experiments/compare_schedules.py --out=/tmp/cmp --config=configs/default.py:fashion \
      --data=continuous,binarized --arms=lognormal,loguniform,infonoise --seeds=0,1,2 \
      --steps=4000 --eval_every=500 [--set=train.batch_size=128 ...] [--workers=3]

Writes, under --out: results.jsonl (append-only, one line per evaluation with the resolved
config and its hash, and the run's mean training loss, mean and largest gradient norm over the
`train_steps` steps since its previous evaluation, `multirun.IntervalStats`; a rerun with the
same arguments skips every evaluation already there, so it never duplicates one), summary.md
(tables, speedups on the primary metric and on every other one the evaluations carry,
report.other_metric_speedup_lines, and each arm's end-of-budget slope, report.flattening_lines) and
curves_<data>.png, speedup_<data>.png (and inception_<data>.png with --fid_records).
`--conv_wgrad` picks how the U-Net's weight gradients are computed (same values; recorded per
line, not in the config hash).
"""

import argparse
import collections
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import jax
import numpy as np

from infonoise_jax import checkpointing, multirun, paths, train
from infonoise_jax import workdir as workdir_lib
from infonoise_jax.data import load_source
from infonoise_jax.data.sources import (
  DATA_PATH_KEYS,
  SAMPLES_DATA_KEY,
  TOKEN_NAMES,
  data_identity,
  same_data,
  samples_data_record,
)
from infonoise_jax.data.tokens import onehot_std
from infonoise_jax.evaluation import fid, plots, report
from infonoise_jax.evaluation.images import to_uint8
from infonoise_jax.evaluation.sequence_eval import SequenceEvaluator, check_held_out
from infonoise_jax.mesh import configure_compilation_cache
from infonoise_jax.model_sampler import Sampler, sampler_config
from infonoise_jax.models import make_model, unet_layers
from infonoise_jax.schedules import SCHEDULES, has_profile, make_schedule
from infonoise_jax.validation import (
  DEFAULT_CONFIG_PATH,
  apply_overrides,
  flat_items,
  load_config_file,
  parse_overrides,
  update_checked,
  validate_config,
)

# Adaptive peers on InfoNoise's terms (issue 12 item 4): an arm with FAIR set takes the resolved
# config's InfoNoise warm-up, bin count and memory (its EMA of beta per refresh of M steps is
# beta^(1/M) per step). The peers still update every step (as in their papers) and keep their
# uniform floor (VDM++ / iDDPM importance weights need p > 0; for CDCD, which has no importance
# weights, the floor is part of the objective: docs/schedules.md). EDM2 has no bins or warm-up (it
# learns a weight with its own Adam from step 0), so it has no fair variant.
FAIR = "fair"
# Named arms beyond the one per registered schedule that `named_arms` adds under its name.
ARMS = {
  "cdcd_fair": {"schedule.name": "cdcd", FAIR: True},
  "vdmpp_fair": {"schedule.name": "vdmpp", FAIR: True},
  "iddpm_fair": {"schedule.name": "iddpm", FAIR: True},
  # the library's (configs/default.py): compensation, onset pivot; `fashion`'s before 2026-12-02
  "infonoise_library": {
    "schedule.name": "infonoise",
    "schedule.infonoise.compensate": True,
    "schedule.infonoise.gate": "onset",
  },
  "infonoise_pinned": {"schedule.name": "infonoise", "schedule.infonoise.gate": "pinned"},
  "infonoise_nocomp": {"schedule.name": "infonoise", "schedule.infonoise.compensate": False},
  "infonoise_hold1": {"schedule.name": "infonoise", "schedule.infonoise.onset_refreshes": 1},
}  # `infonoise` is the config's setting: with configs/default.py:fashion on continuous data
#   (no compensation, pinned 0.15) it is the same run as infonoise_nocomp / _pinned there
DATA = {
  "native": {},  # the config's own data (dna, text, ...)
  "continuous": {},
  "binarized": {"data.binarize": True, "data.scale": 0.5},
}
DATA_VARIANTS = ("binarized",)  # data kinds a config file may know as a variant of its own


def named_arms() -> dict[str, dict]:
  """The arms --arms knows: one per registered schedule (a schedule added to SCHEDULES, as
  docs/schedules.md adds one, needs no edit here), then ARMS."""
  return {**{name: {"schedule.name": name} for name in SCHEDULES}, **ARMS}


def parse_arms(spec: str, extra) -> dict[str, dict]:
  """Named arms (`named_arms`), plus --arm 'name:key=value;key=value' definitions."""
  known, arms = named_arms(), {}
  for name in filter(None, spec.split(",")):
    if name not in known:
      raise ValueError(f"--arms: unknown arm {name!r}; known: {', '.join(known)} (or use --arm)")
    if name in arms:
      raise ValueError(f"--arms: arm {name!r} given twice")
    arms[name] = known[name]
  for item in extra or []:
    name, sep, body = item.partition(":")
    if not sep or not name or not body.strip(";"):
      raise ValueError(f"--arm expects 'name:key=value;...', got {item!r}")
    if name in arms:  # its records would carry the name of another arm's settings
      where = "--arms" if name in known and name in spec.split(",") else "another --arm"
      raise ValueError(
        f"--arm {name}: the name is already given by {where}; name this arm differently "
        f"(e.g. --arm {name}_2:{body})"
      )
    arms[name] = parse_overrides(filter(None, body.split(";")), flag=f"--arm {name}:")
  if not arms:
    raise ValueError("--arms is empty and no --arm is given: name at least one arm")
  return arms


def load_for_data(path: str, variant: str, data: str):
  """The config file's config for a data kind: a file that knows the data kind as a variant
  (configs/default.py: `binarized`) gets it as one more variant token, so its own recipe for
  that data applies (e.g. `fashion` keeps InfoNoise's library setting on binarized data);
  other files get DATA's keys alone."""
  if data in DATA_VARIANTS:
    try:
      return load_config_file(path, ",".join(filter(None, (variant, data))))
    except (TypeError, ValueError):  # no variants, or not this one
      pass
  return load_config_file(path, variant) if variant else load_config_file(path)


# Config keys the harness sets itself from its own flags: a --set or --arm of one would be
# overwritten without a word, so it is refused, naming the flag.
HARNESS_KEYS = {
  "train.num_steps": "--steps",
  "seed": "--seeds (each run's seed; arms share them)",
  "train.eval_num_samples": "--num_samples",
}


def make_config(args, data: str, arm: dict, name: str = ""):
  """The config of one arm on one data kind (`name`: the arm's, for errors); an unknown key
  or a value of the wrong type is a ValueError naming --set or --arm and the key, and a key
  the harness sets from its flags (HARNESS_KEYS) one naming that flag."""
  given = {o.partition("=")[0].strip(): "--set" for o in args.set or []}
  given |= {k: f"--arm {name}:" if name else "--arm" for k in arm if k != FAIR}
  for key, flag in given.items():
    if key in HARNESS_KEYS:
      raise ValueError(
        f"{flag} {key}=...: the harness sets {key} from its own flag; use {HARNESS_KEYS[key]}"
      )
  named = [o.strip() for o in args.set or [] if o.partition("=")[0].strip() == "schedule.name"]
  if named and "schedule.name" in arm:
    raise ValueError(  # the arm's name won in silence, so a typo in it was never checked
      f"--set {named[-1]} and arm {name or '?'} both set schedule.name (the arm's "
      f"{arm['schedule.name']!r}); choose schedules with --arms, not --set"
    )
  path, _, variant = args.config.partition(":")
  c = load_for_data(path, variant, data)
  arm = dict(arm)
  fair = arm.pop(FAIR, False)
  c.update_from_flattened_dict(DATA[data])
  apply_overrides(c, args.set)
  update_checked(c, arm, f"--arm {name}:" if name else "arm")
  if fair:
    info, peers = c.schedule.infonoise, c.schedule.adaptive
    peers.warmup_steps = info.warmup_steps
    peers.num_bins = info.num_bins
    peers.ema_beta = round(info.ema_beta ** (1.0 / info.refresh_every), 6)
  c.train.num_steps = args.steps
  if c.data.name in TOKEN_NAMES:  # token data: as many held-out windows as samples
    c.train.eval_num_samples = args.num_samples
  c.seed = 0  # the run's seed is set per run by MultiRun; hashed configs are seed-free
  return c


# Keys that set how a run is executed, logged or cached, never what it computes: they stay out
# of the config hash, so that changing one (train.max_steps_in_flight's default went from 4 to
# 32) neither splits an arm's records into two settings nor makes a resumed --out train again.
EXECUTION_KEYS = (
  "train.log_every",
  "train.checkpoint_every",
  "train.keep_checkpoints",
  "train.max_steps_in_flight",
  "train.trace_start",
  "train.trace_steps",
  "train.trace_python",
  "optim.flat_update",  # the optimizer's state layout; kept states convert on restore
  "fid.cache_dir",
  "seq_metrics.cache_dir",
  "system",  # processes, compile cache, the MFU's peak
)


def resolved_data_paths(data: dict) -> dict:
  """A copy of a config's data settings with local paths as the folder or file they name
  (absolute, links resolved, from the current directory); remote URLs stay as typed."""
  data = dict(data)
  for key in DATA_PATH_KEYS:
    value = data.get(key)
    if isinstance(value, str) and value and "://" not in value:
      data[key] = os.path.realpath(os.path.expanduser(value))
  return data


def config_hash(config) -> str:
  """16 hex digits of the config's keys (a ConfigDict, or a record's resolved "config"),
  EXECUTION_KEYS left out, and local data paths as the folder or file they name (absolute,
  links resolved, from the current directory): the same data typed as `imgs/`, `./imgs` or
  its absolute path is one setting (each spelling trained the arms again and appended its
  evaluations beside the first). Remote URLs are hashed as typed."""
  d = json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else config
  d = json.loads(json.dumps(d))  # a deep copy
  d["data"] = resolved_data_paths(d.get("data", {}))
  for key in EXECUTION_KEYS:
    *parents, leaf = key.split(".")
    node = d
    for k in parents:
      node = node.get(k, {})
    node.pop(leaf, None)
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _command_config(r: dict) -> dict:
  """The config a record's command hashed. Records of token data written before
  `multirun.MultiRun` copied its config (they have no "sigma_data" field) hold edm.sigma_data
  as the data resolved it from the command's 0: exactly the one-hot std a sqrt(V - 1) / V of
  some vocabulary size V, to full precision; that value goes back to 0. A value of at most 6
  significant digits was typed (0.5 and 0.4 are such stds too, for V = 2 and 5) and stays."""
  c = r["config"]
  if "sigma_data" in r or c.get("data", {}).get("name") not in TOKEN_NAMES:
    return c
  sigma, scale = c["edm"]["sigma_data"], c["data"].get("scale", 1.0)
  typed = float(f"{sigma:.6g}") == sigma
  if typed or not any(sigma == onehot_std(v, scale) for v in range(2, 4097)):
    return c
  return {**c, "edm": {**c["edm"], "sigma_data": 0.0}}


def read_records(path: str) -> list[dict]:
  """The harness's records with their config hash as today's code computes it: from the
  resolved config an evaluation carries, and for records without one (grids) through the
  hash an evaluation of the same file stored beside its config. Records written before a
  change to the hashed keys then still match the config they were run with."""
  try:
    records = report.read_records(path)
  except report.RecordsError as e:  # one line, not a traceback, before any work
    raise SystemExit(f"error: {e}") from None
  new = {r["config_hash"]: config_hash(_command_config(r)) for r in records if "config" in r}
  for r in records:
    if r.get("config_hash") in new:
      r["config_hash"] = new[r["config_hash"]]
  return records


def floor_hash(config, num_samples: int) -> str:
  """What a floor depends on: the data settings (local paths resolved as `config_hash` does) and
  the sample count."""
  data = resolved_data_paths(config.data.to_dict())
  key = json.dumps({"data": data, "num_samples": num_samples}, sort_keys=True)
  return hashlib.sha256(key.encode()).hexdigest()[:16]


def record_setting(r: dict) -> tuple:
  """What makes records one measurement of a group: (config or floor hash, sample count,
  evaluation draw); the parts a kind does not have are None."""
  if r.get("kind") == "floor":
    return (r.get("floor_hash"), None, None)
  draw = report.eval_draw(r) if r.get("kind") == "eval" else None
  return (r.get("config_hash"), r.get("num_samples"), draw)


def sample_seed(args, step: int, resample: bool) -> int:
  """The seed of an evaluation's samples: the same for every arm and training seed, and with
  --eval_draw=fixed for every step too; the resampled draw (the metric noise) apart from both."""
  return 10_000 + (step if args.eval_draw == "per_step" else 0) + (1_000_000 if resample else 0)


def setting_differences(theirs: tuple, recs: list[dict], mine: tuple, config: dict | None) -> str:
  """What sets records of setting `theirs` apart from this command's `mine` (record_setting
  tuples), in words: the sample count, the draw rule and the config keys that differ (from the
  records' resolved config against this command's, `config`; the hash alone where a record
  carries none, or where the keys agree and only the hashing differs, as with older code)."""
  parts = []
  if theirs[1] != mine[1]:
    parts.append(f"{theirs[1]} samples per evaluation (this command: {mine[1]})")
  if theirs[2] != mine[2]:
    parts.append(f"{theirs[2]} draw (this command: {mine[2]})")
  cfg = next((r["config"] for r in recs if isinstance(r.get("config"), dict)), None)
  if theirs[0] != mine[0]:
    diff = []
    if cfg is not None and config is not None:
      a, b = flat_items(cfg), flat_items(config)
      skip = set(EXECUTION_KEYS)
      diff = [k for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)]
    if diff:
      shown = ", ".join(f"{k}={a.get(k, '(none)')!r} (this command: {b.get(k, '(none)')!r})"
                        for k in diff[:3])  # fmt: skip
      parts.append(f"config {shown}" + (f" and {len(diff) - 3} more keys" if len(diff) > 3 else ""))
    else:
      parts.append(f"config hash {theirs[0]} (this command: {mine[0]})")
  return "; ".join(parts) or "the same setting"


def current_records(args, records: list[dict]) -> tuple[list[dict], list[str]]:
  """(records of this command's data kinds and arms, notes). One --out may hold runs of other
  settings under the same arm name (another dataset, step budget or sample count): where an
  arm's records have this command's config hash and sample count, only those are kept; where
  they have one other setting alone (e.g. records written by older code, read again with
  --report_only) they are kept with a note; several other settings are left out with a note,
  never averaged together. Floors likewise, by the data settings and sample count. An arm whose
  only records were scored with another sample count is left out (pixel FD and the sequence
  metrics are biased by the count, so set beside this command's arms it would rank by the
  count, not the schedule); the note names the count to rerun --report_only with. Every note
  says what differs (setting_differences) and how many records it concerns."""
  mine = {}  # (kind, data, arm) -> the setting this command's records carry
  configs = {}  # (kind, data, arm) -> this command's resolved config
  for d, a, arm in groups(args):
    c = make_config(args, d, arm)
    h = config_hash(c)
    mine[("eval", d, a)] = (h, args.num_samples, args.eval_draw)
    mine[("grid", d, a)] = (h, args.grid_samples, None)
    configs[("eval", d, a)] = configs[("grid", d, a)] = json.loads(c.to_json_best_effort())
  for d in dict.fromkeys(d for d, _, _ in groups(args)):
    mine[("floor", d, "")] = (floor_hash(make_config(args, d, {}), args.num_samples), None, None)
  by_group = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in records:
    kind = r.get("kind")
    group = (kind, r.get("data"), "" if kind == "floor" else r.get("arm"))
    if group in mine:
      by_group[group][record_setting(r)].append(r)
  out, notes = [], []
  for (kind, data, arm), settings in sorted(by_group.items()):
    what = f"{data}/{arm or 'floor'} ({kind})"
    want, config = mine[(kind, data, arm)], configs.get((kind, data, arm))
    if want in settings:
      out += settings[want]
      for theirs, recs in settings.items():
        if theirs != want:
          notes.append(
            f"{what}: {len(recs)} records of another setting left out "
            f"({setting_differences(theirs, recs, want, config)})"
          )
    elif len(settings) == 1:
      ((theirs, recs),) = settings.items()
      differs = setting_differences(theirs, recs, want, config)
      if kind != "floor" and theirs[1] != want[1]:
        notes.append(
          f"{what}: its {len(recs)} records were scored with another sample count ({differs}); "
          "the metrics depend on it, so they are not set beside this command's: left out "
          f"(--num_samples={theirs[1]} --report_only reports them)"
        )
        continue
      out += recs
      notes.append(
        f"{what}: {len(recs)} records made with other settings than this command's ({differs}), "
        "e.g. by older code or other arguments; kept"
      )
    else:
      notes.append(f"{what}: {len(settings)} other settings, none this command's; left out")
  wgrads = collections.defaultdict(set)  # not in the config hash: a rerun may mix them
  for r in out:
    if r.get("kind") == "eval" and "conv_wgrad" in r:
      wgrads[(r["data"], r["arm"])].add(str(r["conv_wgrad"]))
  for (data, arm), seen in sorted(wgrads.items()):
    if len(seen) > 1:
      notes.append(
        f"{data}/{arm}: its records mix weight gradients ({', '.join(sorted(seen))}; "
        "--conv_wgrad): the same values up to rounding, not bit for bit the same runs"
      )
  return out, notes


def frechet(x_ND: np.ndarray, ref: fid.Stats) -> float:
  return fid.frechet_distance(fid.stats_of_features(x_ND.reshape(len(x_ND), -1)), ref)


def eval_metrics(x_NX: np.ndarray, source, ref, where: str = "samples") -> dict:
  """Images: FD in pixel space (binarized data also of samples decoded to the two levels);
  token data (`ref` a SequenceEvaluator): the domain metrics. `metric` names the one the
  report ranks by. Samples that are not finite stop the command, naming `where` (the arm,
  seed and step): no metric of them means anything, and the records already written and the
  state kept (--state_dir) stay as they are."""
  bad_N = ~np.isfinite(np.asarray(x_NX, np.float32).reshape(len(x_NX), -1)).all(axis=1)
  if bad_N.any():
    raise FloatingPointError(
      f"{where}: {int(bad_N.sum())} of {len(x_NX)} samples are not finite (nan or inf) although "
      "training's loss was: the model or the sampler diverged. The records before this one are "
      "in results.jsonl (and the state of this step in --state_dir, if set); try a smaller "
      "learning rate or another sampler/grid for this arm"
    )
  if isinstance(ref, SequenceEvaluator):
    return {**ref.metrics(x_NX), "metric": ref.primary}
  out = {"fd": frechet(x_NX.astype(np.float64), ref), "metric": "fd"}
  if source.binarized:
    decoded = np.where(x_NX > 0, source.scale, -source.scale).astype(np.float64)
    out["fd_decoded"] = frechet(decoded, ref)
  return out


# Inference grids compared on the trained models of arms with a learned profile (--grid_steps):
# (solver, grid); Heun with N levels makes 2N-1 network evaluations, as does exp_heun.
GRID_SETTINGS = (
  ("heun", "karras"),
  ("heun", "infogrid"),
  ("heun", "infogrid_rescaled"),
  ("exp_heun", "karras"),
  ("exp_heun", "infogrid"),
)


def grid_study(args, mr, state, data, arm_name, h, done, ref) -> None:
  """FD of each (solver, grid, levels) on the final models of `--grid_seeds` (profile arms).
  One Sampler (one compile) per (solver, levels); the grids only change its sigmas."""
  steps_list = [int(n) for n in filter(None, args.grid_steps.split(","))]
  seeds = grid_seeds(args)
  keep = args.save_samples and mr.source.is_image  # for Inception FID (fid_of_samples.py)
  have = saved_keys(args, data, arm_name, "grid") if keep else set()
  identity = data_identity(mr.config.data) if keep else None
  for method in dict.fromkeys(m for m, _ in GRID_SETTINGS):
    for n in steps_list:
      cfg = sampler_config(mr.config, num_steps=n, method=method)
      sampler = Sampler(cfg, mr.model, mr.schedule, mr.sampler.mesh, mr.source.shape)
      for grid in (g for m, g in GRID_SETTINGS if m == method):
        for r, seed in enumerate(mr.seeds):
          key = f"{arm_name}@{method}-{grid}-{n}__seed{seed}__step{args.steps}"
          evaluated = ("grid", seed, method, grid, n) in done
          if seed not in seeds or (evaluated and (not keep or key in have)):
            continue
          run = mr.run_state(state, r)
          sigmas = sampler.sigmas(run.schedule_state, sampler_config(cfg, grid=grid))
          x = sampler.draw_all(run.ema_params, sigmas, args.grid_samples, 20_000 + seed)
          if keep and key not in have:
            x_u8 = {key: samples_uint8(mr.source, x)}
            save_final_samples(args, data, arm_name, x_u8, "grid", identity)
            have.add(key)
          if evaluated:
            continue
          rec = {
            "kind": "grid",
            "data": data,
            "arm": arm_name,
            "seed": seed,
            "step": args.steps,
            "solver": method,
            "grid": grid,
            "levels": n,
            "nfe": 2 * n - 1,
            **eval_metrics(
              x, mr.source, ref, f"{arm_name} seed {seed}, {method}, {grid} grid, {n} levels"
            ),
            "x_absmax": float(np.abs(x).max()),
            "num_samples": args.grid_samples,
            "config_hash": h,
          }
          report.append_record(os.path.join(args.out, "results.jsonl"), rec)
          print(json.dumps(rec), flush=True)


def grid_seeds(args) -> list[int]:
  return [int(s) for s in filter(None, args.grid_seeds.split(","))]


def samples_path(args, data: str, arm_name: str, kind: str = "final") -> str:
  """final_<data>_<arm>.npz (training runs' samples) or grid_<data>_<arm>.npz (grid study)."""
  return os.path.join(args.samples_dir or args.out, f"{kind}_{data}_{arm_name}.npz")


def saved_keys(args, data: str, arm_name: str, kind: str = "final") -> set[str]:
  path = samples_path(args, data, arm_name, kind)
  if not os.path.exists(path):
    return set()
  with np.load(path) as z:
    return set(z.files)


def samples_uint8(source, x: np.ndarray) -> np.ndarray:
  """Samples as saved for Inception FID: uint8 on the data's range; binarized data decoded
  to its two levels first (the FID of issue 12)."""
  sc = source.scale
  return to_uint8(np.where(x > 0, sc, -sc) if source.binarized else x, (-sc, sc))


def saved_identity(path: str) -> dict | None:
  """The data record (sources.data_identity) of a samples file; None if it has none."""
  if not os.path.exists(path):
    return None
  with np.load(path) as z:
    return samples_data_record(z)


def check_saved_identity(args, data: str, arm_name: str, identity: dict) -> None:
  """Refuses, before training, to add samples to a file that records other data."""
  for kind in ("final", "grid"):
    path = samples_path(args, data, arm_name, kind)
    old = saved_identity(path)
    if old is not None and not same_data(old, identity):
      raise ValueError(
        f"{path} holds samples of other data ({old}), this run trains on {identity}: give "
        "another --samples_dir (or --out)"
      )


def save_final_samples(
  args, data: str, arm_name: str, final: dict, kind: str = "final", identity: dict | None = None
) -> None:
  """final_<data>_<arm>.npz: uint8 samples per run (key <arm>__seed<k>__step<N>), for FID
  with the Inception network elsewhere (experiments/fid_of_samples.py). Appends to the file;
  written to a temporary name first, so a kill mid-write never loses the earlier arrays.
  kind="grid": the grid study's samples, key <arm>@<solver>-<grid>-<levels>__seed<k>__step<N>
  (fid_of_samples.py scores each setting as an arm of that name). `identity`
  (sources.data_identity of the run's data) is recorded as JSON under SAMPLES_DATA_KEY, so
  fid_of_samples.py refuses to score the samples against other data; a file written before
  it was recorded keeps none (its arrays' data is not known)."""
  path = samples_path(args, data, arm_name, kind)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  old = dict(np.load(path)) if os.path.exists(path) else {}
  record = old.pop(SAMPLES_DATA_KEY, None)
  if identity is not None and (record is not None or not old):
    record = np.array(json.dumps(identity, sort_keys=True))
  entries = {**old, **final, **({SAMPLES_DATA_KEY: record} if record is not None else {})}
  tmp = path + ".tmp.npz"
  np.savez_compressed(tmp, **entries)
  os.replace(tmp, path)


def eval_steps(args) -> list[int]:
  return sorted({*range(args.eval_every, args.steps + 1, args.eval_every), args.steps})


def save_steps(args) -> set[int]:
  """Steps whose samples --save_samples keeps: --save_steps ('evals': every evaluation step),
  else the last step."""
  if not args.save_samples:
    return set()
  if args.save_steps == "evals":
    return set(eval_steps(args))
  return {int(s) for s in filter(None, args.save_steps.split(","))} or {args.steps}


def run_group(args, data: str, arm_name: str, arm: dict, path: str) -> None:
  """Trains every seed of one (data, arm) side by side; appends the missing evaluations."""
  config = make_config(args, data, arm)
  wgrad = conv_wgrad(args, config)
  with unet_layers.tap_weight_gradients(wgrad == "taps"):
    train_group(args, data, arm_name, config, wgrad, path)


def train_group(args, data: str, arm_name: str, config, wgrad: str | None, path: str) -> None:
  """run_group's work, with the convolutions' weight gradient `wgrad` already chosen."""
  h = config_hash(config)
  seeds = [int(s) for s in args.seeds.split(",")]
  records = [r for r in read_records(path) if r.get("config_hash") == h and r["data"] == data]
  done = {
    (r["seed"], r["step"], r.get("resample", False))
    for r in records
    if r["kind"] == "eval" and record_setting(r) == (h, args.num_samples, args.eval_draw)
  }
  done |= {
    ("grid", r["seed"], r["solver"], r["grid"], r["levels"])
    for r in records
    if r["kind"] == "grid" and r.get("num_samples") == args.grid_samples
  }
  todo = {(s, t, False) for s in seeds for t in eval_steps(args)}
  todo |= {(s, args.steps, True) for s in seeds}
  if args.grid_steps and has_profile(config.schedule.name):
    todo |= {
      ("grid", s, m, g, int(n))
      for s in grid_seeds(args)
      if s in seeds
      for m, g in GRID_SETTINGS
      for n in args.grid_steps.split(",")
    }
  if todo <= done:
    print(f"{data}/{arm_name}: all {len(todo)} evaluations already in {path}", flush=True)
    return
  train.warn_if_schedule_never_adapts(config)  # an adaptive arm would equal its base law
  mr = multirun.MultiRun(config, seeds)
  ref = reference(mr.config, mr.source)
  resolved = json.loads(config.to_json_best_effort())  # what `h` hashes (MultiRun copies it)
  state, bad = mr.init()
  have = saved_keys(args, data, arm_name)
  identity = None  # the data the saved samples record (fid_of_samples.py checks it)
  if args.save_samples and mr.source.is_image:
    identity = data_identity(mr.config.data)
    check_saved_identity(args, data, arm_name, identity)
  train_s, last = 0.0, 0  # train_s: training wall time, evaluations excluded
  kept = KeptState(args, data, arm_name, h, seeds) if args.state_dir else None
  if kept is not None:
    state, bad, last, train_s = kept.restore(state, bad)
  stop = args.stop_at or args.steps
  evals, saves = set(eval_steps(args)), save_steps(args)  # once, not per step

  def record(step: int, state, trained: list) -> None:
    """The evaluations of `step` not yet in --out and the samples not yet kept."""
    evaluated = {}  # seed -> this step's evaluation samples (saved when --save_num is 0)
    for r, seed in enumerate(seeds):
      for resample in (False, True):
        job = (seed, step, resample)
        if job not in todo or job in done:
          continue
        x = mr.samples(state, r, args.num_samples, sample_seed(args, step, resample))
        rec = {
          "kind": "eval",
          "data": data,
          "arm": arm_name,
          "seed": seed,
          "step": step,
          "images_seen": step * config.train.batch_size,
          "resample": resample,
          **eval_metrics(x, mr.source, ref, f"{arm_name} seed {seed}, step {step}"),
          "num_samples": args.num_samples,
          "eval_draw": args.eval_draw,
          "train_wall_s": round(train_s, 2),
          **(trained[r] if trained else {}),
          "unix_time": round(time.time(), 1),  # when the record was written
          "runs_side_by_side": mr.num_runs,
          "conv_wgrad": wgrad,
          "device": jax.devices()[0].device_kind,
          "config_hash": h,
          "config": resolved,
          "sigma_data": mr.config.edm.sigma_data,  # resolved: token data's config says 0
        }
        if step == args.steps and has_profile(mr.schedule):
          s = mr.run_state(state, r).schedule_state
          ls_K, rho_K = mr.schedule.profile(s)
          rec["profile_peak_sigma"] = float(np.exp(ls_K[int(np.argmax(rho_K))]))
          rec["gate_pivot"] = float(s["gate_pivot"])
          rec["m_K"] = [float(v) for v in np.asarray(s["m_K"])]  # learned per-bin error
        report.append_record(path, rec)
        done.add(job)
        print(json.dumps({k: v for k, v in rec.items() if k not in ("config", "m_K")}), flush=True)
        if not resample and not args.save_num:
          evaluated[seed] = x
        if step == args.steps and r == 0 and not resample and mr.source.is_image:
          grid = plots.sample_grid(x[:64], value_range=(-mr.source.scale, mr.source.scale))
          plots.save_png(os.path.join(args.out, f"samples_{data}_{arm_name}.png"), grid)
    if step in saves and mr.source.is_image:
      final = {}  # uint8 samples per run, written at once: a later kill keeps them
      for r, seed in enumerate(seeds):
        key = f"{arm_name}__seed{seed}__step{step}"
        if key in have:
          continue
        x = evaluated.get(seed)
        if x is None:  # drawn apart: its own seeds, never those of an evaluation
          x = mr.samples(state, r, args.save_num or args.num_samples, 2_000_000 + step)
        final[key] = samples_uint8(mr.source, x)
      if final:
        save_final_samples(args, data, arm_name, final, identity=identity)
        have.update(final)

  # A state kept at `last` whose records were cut off (the kept state is written before a
  # step's evaluations, so a kill while evaluating loses no training): evaluate it first.
  record(last, state, [])
  interval = multirun.IntervalStats()  # training loss and gradient norm between evaluations
  t0, stretches = time.time(), []  # seconds from one kept step to the next, compiles left out
  stopped_by = "--stop_at"
  with compile_seconds() as compiled:
    c0 = compiled[0]
    for step in range(last + 1, stop + 1):
      state, bad, watched = mr.train_step(state, mr.batch(step - 1), bad)
      interval.add(watched)
      if step not in evals and step not in saves and step != stop:
        continue
      multirun.check_finite(bad, seeds, (last + 1, step))  # syncs: the steps are done
      train_s += time.time() - t0
      trained = interval.read() if step in evals else []  # per run, since the last evaluation
      if kept is not None:  # first: a kill while evaluating or saving samples loses no step
        kept.save(step, state, bad, train_s)
      record(step, state, trained)
      stretches.append(time.time() - t0 - (compiled[0] - c0))
      last, t0, c0 = step, time.time(), compiled[0]
      ahead = next_stretch(stretches)
      if args.deadline and last < stop and t0 + ahead > args.deadline:
        stopped_by = f"--time_limit: the next stretch, up to {ahead:.0f} s, would end past it"
        break
  if kept is not None:
    kept.close()
  if last < args.steps:
    print(
      f"{data}/{arm_name}: stopped at step {last} of {args.steps} ({stopped_by}); its state is in "
      f"{kept.directory}: run the command again (with a later --stop_at, or none) to go on",
      flush=True,
    )
  elif args.grid_steps and has_profile(mr.schedule):
    grid_study(args, mr, state, data, arm_name, h, done, ref)


def next_stretch(stretches: list[float]) -> float:
  """--time_limit's estimate of the next stretch between kept steps (each timed with its
  compiles left out): the longest so far, but for the first, which may still hold other
  first-call costs (the evaluation's reference statistics, loading data) and is only used
  until a second is timed."""
  return max(stretches[1:]) if len(stretches) > 1 else stretches[0]


COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # XLA's compile or cache load


@contextlib.contextmanager
def compile_seconds():
  """Seconds this process spends in XLA compiles (persistent-cache loads included) inside the
  block: a one-element list that grows. --time_limit leaves them out of each stretch: the
  first stretch of a call holds the train step's and the samplers' compiles, which no later
  stretch repeats, and an estimate that keeps them stops a call stretches early (binarized
  Fashion on an H100 without a cache: 259 s against 115-130 s for later stretches). Backend
  compiles never nest, so none is counted twice; a JAX that stops emitting the event leaves
  the estimate as cautious as before (nothing subtracted)."""
  total = [0.0]

  def on_duration(event: str, duration: float, **kwargs) -> None:
    if event == COMPILE_EVENT:
      total[0] += duration

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  try:
    yield total
  finally:
    jax.monitoring.unregister_event_duration_listener(on_duration)


class KeptState:
  """One (data, arm)'s stacked training state kept on disk (--state_dir): saved at each
  evaluation, sample-saving and stop step before that step's records, restored by a rerun so
  it trains on from there instead of from step 0. The batches of a step depend only on the
  seed and the step (multirun.MultiRun.batch), so a resumed run sees the data an
  uninterrupted one would.
  The folder names the config hash and the seeds: another setting never restores it."""

  def __init__(self, args, data: str, arm_name: str, h: str, seeds: list[int]):
    self.directory = self.folder(args, data, arm_name, h, seeds)
    self._ckpt = checkpointing.Checkpointer(self.directory, keep=1)

  @staticmethod
  def folder(args, data: str, arm_name: str, h: str, seeds: list[int]) -> str:
    name = f"{data}_{arm_name}_{h}_seeds{'-'.join(map(str, seeds))}"
    return str(paths.run_path(args.state_dir) / name)  # gs:// kept as it is

  def restore(self, state, bad):
    """(state, bad, step, train_s) of the newest kept step; the arguments (step 0) if none."""
    target = {"state": state, "bad": bad}
    abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), target
    )
    restored = self._ckpt.restore_newest_good(abstract)
    if restored is None:
      return state, bad, 0, 0.0
    tree, meta = restored
    print(f"resumed from step {meta['step']} kept in {self.directory}", flush=True)
    return tree["state"], tree["bad"], int(meta["step"]), float(meta["train_s"])

  def save(self, step: int, state, bad, train_s: float) -> None:
    """Saves synchronously (the next step donates `state`): about 1 s for 3 seeds of the
    1.75M-parameter Fashion U-Net."""
    meta = {"step": step, "train_s": train_s}
    self._ckpt.save(step, {"state": state, "bad": bad}, meta)
    self._ckpt.wait()

  def close(self) -> None:
    self._ckpt.close()


def reference(config, source):
  """Images: statistics of all training images (binarized data: also the decoded samples'
  reference); token data: the domain evaluator (held-out windows, reference models)."""
  if source.encoding is not None:
    return SequenceEvaluator(config, source)
  return fid.stats_of_features(source.array.reshape(source.num_examples, -1).astype(np.float64))


def write_floor(args, data: str, path: str) -> None:
  """The metric of `num_samples` real examples: images a random training subset against all
  training images; token data other held-out windows against the reference windows."""
  config = make_config(args, data, {})
  key = floor_hash(config, args.num_samples)
  floors = [r for r in report.read_records(path) if r.get("kind") == "floor"]
  if any(r.get("floor_hash") == key for r in floors):
    return
  source = load_source(config)
  ref = reference(config, source)
  if isinstance(ref, SequenceEvaluator):
    rec = {**ref.floor(), "metric": ref.primary, "num_samples": ref.num}
  else:
    x = source.array.reshape(source.num_examples, -1).astype(np.float64)
    idx = np.random.default_rng(0).choice(len(x), min(args.num_samples, len(x)), replace=False)
    rec = {"fd": frechet(x[idx], ref), "metric": "fd", "num_samples": len(idx)}
  report.append_record(path, {"kind": "floor", "data": data, "floor_hash": key, **rec})


def data_problem(args, data: str, sources: dict) -> str | None:
  """Why `data` cannot be trained on and scored as this command asks, or None: its files load,
  images give the Frechet distance the 2 examples a covariance needs, and token data has the
  2 x --num_samples held-out windows its metric and floor take. `sources`: `cached_source`'s."""
  config = make_config(args, data, {})
  try:
    n = cached_source(config, sources).num_examples
    if config.data.name in TOKEN_NAMES:
      check_held_out(config, args.num_samples, "--num_samples")
  except (OSError, ValueError) as e:
    return f"--data={data}: {e}"
  if config.data.name not in TOKEN_NAMES and n < 2:
    return (
      f"--data={data}: data.name={config.data.name!r} gives {n} example; the Frechet distance "
      "that scores the samples needs at least 2 real ones (a mean and a covariance)"
    )
  return None


def cached_source(config, sources: dict):
  """`config`'s data source, loaded once per data setting while the command line is checked
  (`sources`: the cache, keyed by the data section)."""
  key = config.data.to_json_best_effort(sort_keys=True)
  if key not in sources:
    sources[key] = load_source(config)
  return sources[key]


def groups(args) -> list[tuple[str, str, dict]]:
  arms = parse_arms(args.arms, args.arm)
  return [(d, a, arms[a]) for d in args.data.split(",") for a in arms]


def conv_wgrad(args, config) -> str | None:
  """The weight gradient the U-Net's convolutions use for `config` ('conv' or 'taps'; None
  for a network without them). auto: taps where it was measured faster, i.e. several seeds
  sharing a step on a GPU (RESULTS.md section 9); the plain convolution elsewhere (on the CPU
  the two ran at the same speed, on TPUs taps is unmeasured)."""
  if config.model.name != "unet":
    return None
  if args.conv_wgrad != "auto":
    return args.conv_wgrad
  several = len(args.seeds.split(",")) > 1
  return "taps" if several and jax.default_backend() == "gpu" else "conv"


def worker_gpus(args) -> list[str]:
  """The GPU each of --workers processes runs on (`--worker_gpus`, dealt out in turn), or []
  for the same visible devices as this process."""
  return [g.strip() for g in args.worker_gpus.split(",") if g.strip()]


def spawn_workers(args) -> None:
  """Runs the (data, arm) groups in `--workers` processes: on the same accelerator, or dealt
  out over `--worker_gpus` (one CUDA_VISIBLE_DEVICES id each, in turn)."""
  # An outer XLA_PYTHON_CLIENT_MEM_FRACTION is this harness's share of each card (two
  # harnesses side by side, 0.45 each), split between the workers that share a card; without
  # one, 0.9 of the card.
  outer = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
  try:
    total = float(outer)
  except ValueError:
    raise SystemExit(
      f"XLA_PYTHON_CLIENT_MEM_FRACTION={outer!r} is not a number: set it to this harness's "
      "share of the device memory (e.g. 0.45) or unset it (0.9)"
    ) from None
  gpus = worker_gpus(args)
  on = [gpus[i % len(gpus)] if gpus else None for i in range(args.workers)]
  envs = []
  for gpu in on:
    env = {**os.environ, "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{total / on.count(gpu):.3f}"}
    if gpu is not None:
      env["CUDA_VISIBLE_DEVICES"] = gpu
    envs.append(env)
  argv, rest = [], iter(sys.argv[1:])
  for a in rest:  # every argument but --workers and --worker_gpus (=value or separate)
    if a in ("--workers", "--worker_gpus"):
      next(rest, None)
    elif not a.startswith(("--workers=", "--worker_gpus=")):
      argv.append(a)
  if args.deadline:  # the workers stop by the parent's clock, not by their own start
    argv.append(f"--deadline={args.deadline}")
  procs = [
    subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), *argv, f"--shard={i}/{args.workers}"], env=env
    )
    for i, env in enumerate(envs)
  ]
  codes = [p.wait() for p in procs]
  if any(codes):
    raise SystemExit(f"worker exit codes {codes}")


def parse(argv=None) -> argparse.Namespace:
  # the whole module docstring: the arm, data and output formats are explained only there
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--out", required=True)
  p.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="path[:variant]")
  p.add_argument("--steps", type=int, default=6000)
  p.add_argument("--eval_every", type=int, default=1000)
  p.add_argument("--num_samples", type=int, default=2048)
  p.add_argument(
    "--eval_draw",
    default="fixed",
    choices=["fixed", "per_step"],
    help="evaluation samples' seeds: the same at every step (fixed) or new each step "
    "(per_step, 10,000 + step: RESULTS.md sections 1-27)",
  )
  p.add_argument("--seeds", default="0,1,2", help="comma list; an arm's seeds train vmapped")
  p.add_argument(
    "--data",
    default="continuous,binarized",
    help=f"comma list of data kinds: {', '.join(DATA)} (native: the config's own data)",
  )
  p.add_argument(
    "--arms",
    default="lognormal,infonoise",
    help="comma list of named arms: " + ", ".join(named_arms()),
  )
  p.add_argument(
    "--arm",
    action="append",
    help="extra arm 'name:key=value;key=value' (repeat), e.g. "
    "'lognormal_p1:schedule.name=lognormal;schedule.lognormal.p_mean=-1.0'",
  )
  p.add_argument("--set", action="append", help="override for every arm, key=value")
  p.add_argument("--workers", type=int, default=1, help="processes sharing the accelerator")
  p.add_argument(
    "--worker_gpus",
    default="",
    help="comma list of GPU ids (CUDA_VISIBLE_DEVICES) dealt out to the --workers in turn, "
    "e.g. 0,1 with --workers=2: one worker per card; '' = every worker on the visible devices",
  )
  p.add_argument("--shard", default="0/1", help="(internal) i/n: this worker's groups")
  p.add_argument("--save_samples", action="store_true", help="final samples to final_*.npz")
  p.add_argument("--save_num", type=int, default=0, help="samples saved per run; 0 = the eval's")
  p.add_argument(
    "--save_steps", default="", help="steps to save samples at ('evals': each eval); '' = last"
  )
  p.add_argument("--samples_dir", default="", help="folder of final_*.npz; '' = --out")
  p.add_argument(
    "--grid_steps", default="", help="levels for the inference-grid study, e.g. 6,10,18"
  )
  p.add_argument("--grid_seeds", default="0,1,2", help="seeds whose final models the study uses")
  p.add_argument("--grid_samples", type=int, default=1000)
  p.add_argument("--baseline", default="", help="arm for speedups; '' = best fixed arm")
  p.add_argument(
    "--speedup_tail",
    type=int,
    default=1,
    help="the speedup's target: the mean of the baseline's last N evaluations (N > 1 steadies "
    "the target of a flat curve, RESULTS.md section 21)",
  )
  p.add_argument(
    "--state_dir",
    default="",
    help="keep each arm's training state here at every evaluation (and stop) step, before its "
    "records; a rerun of the same command trains on from the newest one. '' = off",
  )
  p.add_argument(
    "--stop_at",
    type=int,
    default=0,
    help="train only to this step now (needs --state_dir); rerun later to go on. 0 = --steps",
  )
  p.add_argument(
    "--time_limit",
    type=float,
    default=0,
    help="seconds this command may run (needs --state_dir): each arm stops, its state kept, at "
    "the first kept step from which the next stretch (timed as the longest so far after the "
    "first, evaluations and saves included, XLA compiles left out) would end past it; a rerun goes "
    "on. Stops cleanly before a call's or job's hard limit would kill it mid-stretch. 0 = none",
  )
  p.add_argument("--deadline", type=float, default=0, help="(internal) --time_limit's end, unix s")
  p.add_argument(
    "--restart_lost_state",
    action="store_true",
    help="with --state_dir: train an arm from step 0 even though --out holds its evaluations "
    "and no kept state is found (else that stops before any work)",
  )
  p.add_argument("--report_only", action="store_true", help="only rewrite the report files")
  p.add_argument(
    "--conv_wgrad",
    default="auto",
    choices=["auto", "conv", "taps"],
    help="U-Net convolutions' weight gradient: taps = matmuls per kernel tap, same values, "
    "1.6x faster with 3 seeds vmapped on an H200 (RESULTS.md section 9); auto = taps when "
    "several seeds share a step on a GPU, else the plain convolution",
  )
  p.add_argument(
    "--fid_records",
    default="",
    help="comma list of fid_of_samples.py outputs: an Inception FID section in the report",
  )
  args = p.parse_args(argv)
  for d in args.data.split(","):
    if d not in DATA:
      p.error(f"--data: unknown {d!r}; known: {', '.join(DATA)}")
  if args.steps < 1 or args.eval_every < 1 or args.workers < 1 or args.speedup_tail < 1:
    p.error("--steps, --eval_every, --workers and --speedup_tail must be >= 1")
  if args.num_samples < 2 or args.grid_samples < 2:
    p.error(
      f"--num_samples={args.num_samples} and --grid_samples={args.grid_samples} must be >= 2: "
      "a Frechet distance needs a covariance of at least two samples"
    )
  for flag, low, allow_empty in (
    ("seeds", 0, False),
    ("grid_seeds", 0, True),
    ("grid_steps", 2, True),
  ):
    items = getattr(args, flag).split(",") if getattr(args, flag) else []
    if not all(t.strip().isdigit() and int(t) >= low for t in items) or not (items or allow_empty):
      p.error(
        f"--{flag}={getattr(args, flag)!r}: expected a comma list of whole numbers >= {low}, "
        "e.g. " + {"seeds": "0,1,2", "grid_seeds": "0,1", "grid_steps": "6,10,18"}[flag]
      )
    if len(set(map(int, items))) < len(items):
      p.error(f"--{flag}={getattr(args, flag)!r}: a value is given twice")
  if args.grid_steps and not set(grid_seeds(args)) & {int(t) for t in args.seeds.split(",")}:
    p.error(
      f"--grid_seeds={args.grid_seeds} names none of --seeds={args.seeds}: the grid study runs on "
      "the final models of those seeds, so it would not run; give seeds that train"
    )
  gpus = worker_gpus(args)
  if gpus and (args.workers < 2 or not all(g.isdigit() for g in gpus)):
    p.error(
      f"--worker_gpus={args.worker_gpus!r} needs --workers >= 2 (got {args.workers}) and "
      "non-negative GPU ids, e.g. --workers=2 --worker_gpus=0,1"
    )
  if gpus and len(gpus) > args.workers:
    p.error(
      f"--worker_gpus names {len(gpus)} GPUs for {args.workers} workers: some would stay "
      f"idle; give --workers={len(gpus)} or fewer ids"
    )
  missing = [f for f in filter(None, args.fid_records.split(",")) if not os.path.exists(f)]
  if missing:
    p.error(f"--fid_records: no such file {', '.join(missing)} (fid_of_samples.py --out)")
  if args.stop_at and not (1 <= args.stop_at <= args.steps and args.state_dir):
    p.error(
      f"--stop_at={args.stop_at} needs 1 <= --stop_at <= --steps={args.steps} and a "
      "--state_dir to keep the state in (else the steps trained would be lost)"
    )
  if args.time_limit < 0 or (args.time_limit and not args.state_dir):
    p.error(
      f"--time_limit={args.time_limit:g} needs to be >= 0, and a --state_dir to keep the "
      "state in when it stops an arm (else the steps trained would be lost)"
    )
  if args.time_limit and not args.deadline:  # a worker gets its parent's deadline
    args.deadline = time.time() + args.time_limit
  if args.save_num < 0:
    p.error(f"--save_num must be >= 0, got {args.save_num}")
  given = [] if args.save_steps == "evals" else list(filter(None, args.save_steps.split(",")))
  bad = [t for t in given if not t.isdigit() or not 1 <= int(t) <= args.steps]
  if bad:
    p.error(f"--save_steps: {','.join(bad)} outside 1..--steps={args.steps}")
  try:
    gs = groups(args)  # bad arm specs fail here, before any work
  except ValueError as e:
    p.error(str(e))
  for d in dict.fromkeys(d for d, _, _ in gs):  # each data kind's config builds, before any work
    try:
      data = make_config(args, d, {}).data
      for flag in ("--out", "--state_dir", "--samples_dir"):  # not to be read back as images
        if getattr(args, flag[2:]):
          workdir_lib.check_outside_data(getattr(args, flag[2:]), data.path, flag)
    except (ValueError, TypeError) as e:
      p.error(f"--config={args.config} --data={d}: {e}")
    name = data.name
    if name in TOKEN_NAMES and d != "native":
      p.error(
        f"--data={d}: {args.config} trains token data (data.name={name!r}), which is neither "
        "continuous nor binarized images; use --data=native"
      )
  sources = {}  # per data setting: its files are read once below
  if args.report_only:
    if not os.path.exists(os.path.join(args.out, "results.jsonl")):
      p.error(
        f"--report_only: {os.path.join(args.out, 'results.jsonl')} does not exist, so there is "
        "nothing to report; run the comparison first (the same command without --report_only) "
        "or point --out at the folder that holds its results.jsonl"
      )
  else:  # the data is there and can be scored, before any compile (not needed for a report)
    for d in dict.fromkeys(d for d, _, _ in gs):
      problem = data_problem(args, d, sources)
      if problem:
        p.error(problem)
  for d, a, arm in gs:  # every arm's whole config is valid before the first arm trains
    try:
      config = make_config(args, d, arm, a)
      shape = None if args.report_only else cached_source(config, sources).shape
      check_arm_config(config, shape)
    except (OSError, ValueError, TypeError, KeyError) as e:
      p.error(f"arm {a!r} (--data={d}): {e}")
  arm_names = list(dict.fromkeys(a for _, a, _ in gs))
  if args.baseline and args.baseline not in arm_names:
    p.error(f"--baseline={args.baseline!r} is not one of this command's arms: {arm_names}")
  if not args.report_only:
    other = other_draws(args, gs)
    if other:
      p.error(
        f"--eval_draw={args.eval_draw}: {os.path.join(args.out, 'results.jsonl')} already holds "
        f"evaluations of {', '.join(sorted(other))} drawn {'/'.join(sorted(set(other.values())))}"
        " (the rule before RESULTS.md section 28 is per_step); go on with them with that "
        "--eval_draw, or give another --out for a new run"
      )
    lost, ahead = kept_states_off_the_curve(args, gs)
    lost = {} if args.restart_lost_state else lost
    if lost:
      p.error(
        f"--state_dir={args.state_dir} holds no kept state for "
        + ", ".join(
          f"{k} (evaluated to step {last}"
          + (f"; kept for --seeds={' or '.join(other)} only" if other else "")
          + ")"
          for k, (last, other) in sorted(lost.items())
        )
        + f" in {os.path.join(args.out, 'results.jsonl')}: going on would train from step 0 "
        "again and append evaluations of a new model to the recorded curve. Copy the kept "
        "state back into --state_dir, give another --out, or pass --restart_lost_state to "
        "train again from step 0 anyway"
      )
    if ahead:
      p.error(
        f"--state_dir={args.state_dir} keeps "
        + ", ".join(
          f"{k} at step {kept} (no evaluation of step {', '.join(map(str, missing[:4]))}"
          + ("..." if len(missing) > 4 else "")
          + ")"
          for k, (kept, missing) in sorted(ahead.items())
        )
        + f" in {os.path.join(args.out, 'results.jsonl')}: going on from there would leave "
        "those evaluations out of the curve for good. Give the --out (and --eval_every) the "
        "state was kept with, or another --state_dir to train from step 0"
      )
  return args


def other_draws(args, gs) -> dict[str, str]:
  """{data/arm: draw} for this command's arms (same config and sample count) whose evaluations
  in --out were drawn by another --eval_draw rule: going on would mix two draws in one curve
  (a resumed --state_dir could not evaluate its earlier steps again)."""
  path = os.path.join(args.out, "results.jsonl")
  if not os.path.exists(path):
    return {}
  mine = {(d, a): config_hash(make_config(args, d, arm)) for d, a, arm in gs}
  out = {}
  for r in read_records(path):
    key = (r.get("data"), r.get("arm"))
    if r.get("kind") == "eval" and key in mine:
      h, num, draw = record_setting(r)
      if (h, num) == (mine[key], args.num_samples) and draw != args.eval_draw:
        out["/".join(key)] = draw
  return out


def kept_states_off_the_curve(args, gs) -> tuple[dict, dict]:
  """(lost, ahead): where this command's arms' kept state (--state_dir) and their recorded
  curve in --out disagree, read in one pass (read_records rehashes every record).
  lost: {data/arm: (last evaluated step, the --seeds other kept states are for)} for arms
  evaluated to a step, with evaluations still to come, but no kept state (the machine that kept
  it is gone, another --state_dir, or other --seeds): going on would train from step 0 again
  and append evaluations of another model than the one recorded (GPU training is not
  bit-reproducible).
  ahead: {data/arm: (kept step, evaluation steps before it missing from --out)} for arms whose
  kept state is ahead of the curve (a new --out, or a finer --eval_every, with an earlier run's
  --state_dir): a resumed run never evaluates the steps it skips. A state one evaluation ahead
  is normal (kept before its records, then stopped): its own step is evaluated on resume."""
  if not args.state_dir:
    return {}, {}
  path = os.path.join(args.out, "results.jsonl")
  records = read_records(path) if os.path.exists(path) else []
  seeds = [int(s) for s in args.seeds.split(",")]
  root = paths.run_path(args.state_dir)
  lost, ahead = {}, {}
  for d, a, arm in gs:
    h = config_hash(make_config(args, d, arm))
    have = {(r["seed"], r["step"]) for r in arm_evals(args, records, d, a, h) if r["seed"] in seeds}
    kept = checkpointing.saved_steps(KeptState.folder(args, d, a, h, seeds))
    last = max((t for _, t in have), default=0)
    if not kept and last and last < args.steps:
      prefix = f"{d}_{a}_{h}_seeds"  # KeptState.folder's name for other --seeds
      other = sorted(
        q.name[len(prefix) :].replace("-", ",")
        for q in (root.iterdir() if root.is_dir() else [])
        if q.name.startswith(prefix) and checkpointing.saved_steps(str(q))
      )
      lost[f"{d}/{a}"] = (last, other)
    elif kept:
      missing = [
        t for t in eval_steps(args) if t < kept[-1] and any((s, t) not in have for s in seeds)
      ]
      if missing:
        ahead[f"{d}/{a}"] = (kept[-1], missing)
  return lost, ahead


def arm_evals(args, records: list[dict], data: str, arm_name: str, h: str) -> list[dict]:
  """The evaluation records of one of this command's arms: its data, name and setting (config
  hash `h`, sample count, draw rule)."""
  setting = (h, args.num_samples, args.eval_draw)
  return [
    r
    for r in records
    if r.get("kind") == "eval"
    and (r.get("data"), r.get("arm")) == (data, arm_name)
    and record_setting(r) == setting
  ]


def unfinished(args, path: str) -> list[str]:
  """data/arm of this command's arms whose evaluations in `path` miss --steps for some seed."""
  seeds = {int(s) for s in args.seeds.split(",")}
  records = read_records(path)
  out = []
  for d, a, arm in groups(args):
    evals = arm_evals(args, records, d, a, config_hash(make_config(args, d, arm)))
    if not seeds <= {r["seed"] for r in evals if r["step"] == args.steps}:
      out.append(f"{d}/{a}")
  return out


def check_arm_config(config, data_shape: tuple[int, ...] | None = None) -> None:
  """What MultiRun checks before it trains (general keys, the schedule's own settings and, for
  the data's example `data_shape`, the network: a U-Net's levels and attention resolutions fit
  the images): token data's edm.sigma_data = 0 is resolved from the data later, so a stand-in
  value is checked here."""
  validate_config(config, 1)
  probe = config.copy_and_resolve_references()
  if not probe.edm.sigma_data and probe.data.name in TOKEN_NAMES:
    probe.edm.sigma_data = 1.0
  make_schedule(probe)
  if data_shape is not None:
    make_model(probe, data_shape)


def main(argv=None) -> None:
  args = parse(argv)
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "results.jsonl")
  if args.report_only:
    pass
  elif args.workers > 1:
    for d in args.data.split(","):
      write_floor(args, d, path)
    spawn_workers(args)
  else:
    i, n = map(int, args.shard.split("/"))
    print(f"devices: {jax.devices()}", flush=True)
    # The persistent compilation cache (system.* of the config, as the trainer's): a call that
    # goes on from --state_dir loads the steps and samplers an earlier call compiled (each
    # call's first 1,000 Fashion steps took ~80 s more than the next on an H100, RESULTS.md
    # section 38, most of it compiling).
    first_data, first_arm, first = groups(args)[0]
    configure_compilation_cache(make_config(args, first_data, first, first_arm).system)
    for d in args.data.split(","):
      write_floor(args, d, path)
    for k, (d, a, arm) in enumerate(groups(args)):
      if k % n != i:
        continue
      if args.deadline and time.time() >= args.deadline:
        print(f"{d}/{a}: not started, --time_limit reached: a rerun trains it", flush=True)
        continue
      run_group(args, d, a, arm, path)
    if n > 1:
      return
  if args.stop_at and args.stop_at < args.steps:
    print(f"stopped at --stop_at={args.stop_at}: the report waits for --steps", flush=True)
    return
  if args.time_limit and not args.report_only and unfinished(args, path):
    print("stopped by --time_limit: the report waits for every arm's --steps", flush=True)
    return
  arm_names = list(dict.fromkeys(a for _, a, _ in groups(args)))
  fid_lines = [r for p in filter(None, args.fid_records.split(",")) for r in report.read_records(p)]
  records, notes = current_records(args, read_records(path))
  for note in notes:
    print(f"report: {note}", flush=True)
  if not any(r.get("kind") == "eval" for r in records):
    raise SystemExit(
      f"No evaluation in {path} matches this command's settings (--config, --set, --arms/--arm, "
      "--data, --steps, --num_samples): the report files there are left as they were. Give the "
      "arguments the results were made with."
    )
  text = report.write_report(
    args.out, records, arm_names, args.baseline, fid_lines, notes, args.speedup_tail
  )
  print(text, flush=True)


if __name__ == "__main__":
  try:
    main()
  except KeyboardInterrupt:  # Ctrl-C: what is kept and how to go on, not a traceback
    print(
      "\ninterrupted: the evaluations made so far are in --out's results.jsonl (and each arm's "
      "state at its last kept step in --state_dir, if given); the same command goes on",
      file=sys.stderr,
    )
    sys.exit(130)
