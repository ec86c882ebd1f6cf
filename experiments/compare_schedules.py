"""Compare training noise schedules on one recipe: quality against training steps, by seed.

Trains the same network with each schedule arm and seed, and every `--eval_every` steps
draws samples from the EMA model (same sampler for every arm) and measures the Frechet
distance between sample and data statistics in pixel space (lower is better). For 8x8
digits, pixel space is a small (64-d) and honest feature space; it needs no extra network.

  python experiments/compare_schedules.py --out=/tmp/cmp --steps=6000 --seeds=0,1,2 \
      --data=continuous,binarized --arms=lognormal,infonoise,infonoise_onset

Writes <out>/results.jsonl (one line per evaluation) and prints a markdown summary.
"""

import argparse
import json
import os
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import jax
import numpy as np

from infonoise_jax import diagnostics, train
from infonoise_jax.evaluation import fid
from infonoise_jax.validation import DEFAULT_CONFIG_PATH, load_config_file

ARMS = {
  "lognormal": {"schedule.name": "lognormal"},
  "loguniform": {"schedule.name": "loguniform"},
  "logitnormal": {"schedule.name": "logitnormal"},
  "laplace": {"schedule.name": "laplace"},
  "cosine": {"schedule.name": "cosine"},
  "cdcd": {"schedule.name": "cdcd"},
  "vdmpp": {"schedule.name": "vdmpp"},
  "iddpm": {"schedule.name": "iddpm"},
  "edm2": {"schedule.name": "edm2"},
  "infonoise": {"schedule.name": "infonoise"},
  "infonoise_onset": {"schedule.name": "infonoise", "schedule.infonoise.gate": "onset"},
  "infonoise_nocomp": {"schedule.name": "infonoise", "schedule.infonoise.compensate": False},
  "infonoise_onset_nocomp": {
    "schedule.name": "infonoise",
    "schedule.infonoise.gate": "onset",
    "schedule.infonoise.compensate": False,
  },
  "infonoise_onset_comp": {
    "schedule.name": "infonoise",
    "schedule.infonoise.gate": "onset",
    "schedule.infonoise.compensate": True,
  },
}
DATA = {
  "continuous": {},
  "binarized": {"data.binarize": True, "data.scale": 0.5},
}


def make_config(args, data: str, arm: str, seed: int):
  c = load_config_file(DEFAULT_CONFIG_PATH)
  c.update_from_flattened_dict({**DATA[data], **ARMS[arm]})
  c.seed = seed
  c.train.num_steps = args.steps
  c.train.batch_size = args.batch_size
  return c


def data_stats(run) -> fid.Stats:
  x = run.source.array.reshape(run.source.num_examples, -1).astype(np.float64)
  return fid.stats_of_features(x)


def run_arm(args, data: str, arm: str, seed: int, out) -> None:
  config = make_config(args, data, arm, seed)
  run = train.Run(config, "/tmp/unused")
  ref = data_stats(run)
  state = run.init_fn()
  t0 = time.time()
  for step in range(1, args.steps + 1):
    state, _ = run.train_step(state, run.global_batch(run.pipeline.batch(step - 1)))
    if step % args.eval_every == 0 or step == args.steps:
      x = diagnostics.generate_samples(run, state, args.num_samples, 10_000 + step)
      d = fid.frechet_distance(fid.stats_of_features(x.reshape(len(x), -1)), ref)
      rec = {
        "data": data,
        "arm": arm,
        "seed": seed,
        "step": step,
        "fd": d,
        "wall_s": round(time.time() - t0, 1),
      }
      if step == args.steps and hasattr(run.schedule, "profile"):
        ls_K, rho_K = run.schedule.profile(state.schedule_state)
        rec["profile_peak_sigma"] = float(np.exp(ls_K[int(np.argmax(rho_K))]))
        rec["gate_pivot"] = float(state.schedule_state["gate_pivot"])
      out.write(json.dumps(rec) + "\n")
      out.flush()
      print(json.dumps(rec), flush=True)


def summarize(path: str) -> str:
  recs = [json.loads(line) for line in open(path)]
  lines = ["| data | arm | step | FD mean | FD min..max (seeds) |", "|---|---|---|---|---|"]
  keys = sorted({(r["data"], r["arm"], r["step"]) for r in recs})
  for data, arm, step in keys:
    v = [r["fd"] for r in recs if (r["data"], r["arm"], r["step"]) == (data, arm, step)]
    lines.append(f"| {data} | {arm} | {step} | {np.mean(v):.4f} | {min(v):.4f}..{max(v):.4f} |")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True)
  p.add_argument("--steps", type=int, default=6000)
  p.add_argument("--eval_every", type=int, default=1000)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--num_samples", type=int, default=2048)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--data", default="continuous,binarized")
  p.add_argument("--arms", default="lognormal,infonoise,infonoise_onset")
  args = p.parse_args()
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "results.jsonl")
  print(f"devices: {jax.devices()}", flush=True)
  with open(path, "a") as out:
    for seed in map(int, args.seeds.split(",")):  # seed-major: a cut-short run stays paired
      for data in args.data.split(","):
        for arm in args.arms.split(","):
          run_arm(args, data, arm, seed, out)
  print(summarize(path))


if __name__ == "__main__":
  main()
