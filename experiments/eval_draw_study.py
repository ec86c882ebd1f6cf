"""How much does one evaluation draw move a model's pixel FD, and do draws move models together?

compare_schedules.py draws an evaluation's samples from the same seed for every arm and training
seed (paired by design; with `--eval_draw=per_step` the seed 10,000 + step, its rule before
RESULTS.md section 28, a new draw each step), and measures the metric's noise from one second
draw per model at the last step. This script asks what that design hides: it trains the runs of one
config side by side (seeds vmapped, `multirun.MultiRun`, as the harness does) for --steps and,
at each of --score_steps (default: the last), scores every run's EMA samples under each of
--draws (default: the per-step evaluation seeds of steps 1,000..10,000, i.e. 11,000..20,000)
and prints, per scored step,

- the FD table, draws x runs;
- per draw, its mean deviation from each run's own mean over all draws (the shared part of a
  draw's effect) and the spread of that deviation across runs;
- the correlation across draws between runs' deviations: near 1, a draw moves every model the
  same way (the same initial noise maps to similar samples under similar models); near 0,
  each model's FD wobbles on its own.

  python experiments/eval_draw_study.py --config=configs/default.py:fashion,mlp \
    --set=data.local_dir=.data/fm --steps=1500 --seeds=0,1,2 --out=draws.jsonl
  # the U-Net recipe of RESULTS.md sections 14-22 on a GPU: is the model at step 6,000 worse
  # under every draw (training) or only under the harness's draw 16,000 (the evaluation)?
  python experiments/eval_draw_study.py --config=configs/default.py:fashion --data=binarized \
    --arm=lognormal --set=data.local_dir=.data/fm --set=model.model_channels=32 \
    --set=model.dtype=bfloat16 --set=fid.batch_size=1000 --steps=7000 \
    --score_steps=5000,6000,7000 --seeds=0,1,2 --draws=15000,16000,17000,20000

`--kept=final_<data>_<arm>.npz` scores, without training, the samples the harness kept
(`--save_samples`, drawn apart from its evaluations) in chunks of --num_samples, next to the
harness's own evaluation of the same run and step (`--results=<its results.jsonl>`): whether a
model is worse under independent draws too (RESULTS.md section 25 answers the question above
this way, from the samples kept for Inception FID):

  python experiments/eval_draw_study.py --config=configs/default.py:fashion --data=binarized \
    --set=data.local_dir=.data/fm --kept=.data/keep/final_binarized_lognormal.npz \
    --results=runs/evidence/fashion_binarized/results.jsonl

--out gets one JSON line per (run, draw, step) with the config hash, which is the harness's for
the same --config/--data/--arm/--set/--steps (its `compare_schedules.make_config`). CPU cost
(2 cores, MLP 512x3 at 28x28): experiments/RESULTS.md section 24.
"""

import argparse
import os
import re
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import compare_schedules  # this script's folder is on sys.path when it runs
import numpy as np

from infonoise_jax import multirun
from infonoise_jax.data import load_source
from infonoise_jax.data.sources import SAMPLES_DATA_KEY
from infonoise_jax.evaluation import images, report
from infonoise_jax.models import unet_layers

KEPT_KEY = re.compile(r"^(.+?)__seed(\d+)__step(\d+)$")  # compare_schedules' kept arrays
HARNESS_DRAWS = ",".join(str(10_000 + s) for s in range(1_000, 10_001, 1_000))


def draw_effects(fd_DR: np.ndarray) -> dict:
  """fd_DR: FD of draw d for run r. Returns each draw's deviation from its run's mean over all
  draws (dev_DR), the mean deviation per draw (shared_D), the mean |deviation| (spread), and the
  mean pairwise correlation between runs' deviation columns (nan for one run)."""
  dev_DR = fd_DR - fd_DR.mean(axis=0, keepdims=True)
  r = fd_DR.shape[1]
  corr = [np.corrcoef(dev_DR[:, i], dev_DR[:, j])[0, 1] for i in range(r) for j in range(i + 1, r)]
  return {
    "dev_DR": dev_DR,
    "shared_D": dev_DR.mean(axis=1),
    "spread": float(np.abs(dev_DR).mean()),
    "corr": float(np.mean(corr)) if corr else float("nan"),
  }


def score(mr, state, ref, draws, seeds, num, step, out, h) -> np.ndarray:
  """FD of every run's EMA samples under every draw at `step`: (draws, runs)."""
  fd_DR = np.zeros((len(draws), len(seeds)))
  for d, draw in enumerate(draws):
    for r, seed in enumerate(seeds):
      x = mr.samples(state, r, num, draw)
      fd_DR[d, r] = compare_schedules.eval_metrics(x, mr.source, ref)["fd"]
      if out:
        rec = {"draw": draw, "seed": seed, "step": step, "fd": fd_DR[d, r]}
        report.append_record(out, rec | {"num_samples": num, "config_hash": h})
    print(f"step {step}, draw {draw}: " + " ".join(f"{v:.4f}" for v in fd_DR[d]), flush=True)
  return fd_DR


def print_table(fd_DR: np.ndarray, draws, seeds, step: int) -> None:
  e = draw_effects(fd_DR)
  print(f"\nstep {step}\n\n| draw | {' | '.join(f'seed {s}' for s in seeds)} | shared deviation |")
  print("|---" * (len(seeds) + 2) + "|")
  for d, draw in enumerate(draws):
    cells = " | ".join(f"{v:.4f}" for v in fd_DR[d])
    print(f"| {draw} | {cells} | {e['shared_D'][d]:+.4f} |")
  worst = int(np.argmax(np.abs(e["shared_D"])))
  print(
    f"\nmean |deviation| of a draw from its run's mean: {e['spread']:.4f}; correlation of the "
    f"runs' deviations across draws: {e['corr']:.3f}; largest shared deviation "
    f"{abs(e['shared_D'][worst]):.4f} (draw {draws[worst]}); mean over draws and runs "
    f"{fd_DR.mean():.4f}",
    flush=True,
  )


def kept_table(paths, source, ref, num: int, results: str = "") -> list[dict]:
  """Pixel FD of kept samples (the harness's final_<data>_<arm>.npz: uint8 arrays named
  <arm>__seed<k>__step<N>, drawn apart from its evaluations) in consecutive chunks of `num`,
  each an independent draw of the evaluation's size; binarized data's arrays are decoded to
  the two levels, so this is the evaluation's `fd_decoded`. With `results` (the harness's
  results.jsonl) each row also carries that evaluation's value for the same run and step
  (its evaluation draw, and the resampled one where there is one)."""
  metric = "fd_decoded" if source.binarized else "fd"
  evals = {}
  for r in report.read_records(results) if results else []:
    if r.get("kind") == "eval" and metric in r:
      evals[(r["arm"], r["seed"], r["step"], bool(r["resample"]))] = r[metric]
  rows = []
  for path in paths:
    z = np.load(path)
    for key in z.files:
      if key == SAMPLES_DATA_KEY:  # the record of the data they were trained on, no samples
        continue
      m = KEPT_KEY.match(key)
      if m is None:
        raise ValueError(
          f"{path}: array {key!r} is not named <arm>__seed<k>__step<N>: --kept takes the "
          "harness's final_<data>_<arm>.npz (compare_schedules.py --save_samples)"
        )
      arm, seed, step = m.groups()
      x = images.from_uint8(z[key], (-source.scale, source.scale))
      chunks = [x[i : i + num] for i in range(0, len(x) - num + 1, num)]
      if not chunks:
        raise ValueError(f"{path}:{key} holds {len(x)} samples, fewer than --num_samples={num}")
      fds = [compare_schedules.frechet(c.astype(np.float64), ref) for c in chunks]
      k = (arm, int(seed), int(step))
      rows.append(
        {"key": key, "arm": k[0], "seed": k[1], "step": k[2], "fd_chunks": fds}
        | {"harness": evals.get((*k, False)), "harness_resampled": evals.get((*k, True))}
      )
  return rows


def print_kept(rows: list[dict], num: int) -> None:
  fmt = lambda v: "" if v is None else f"{v:.4f}"
  print(f"\n| run | kept draws, {num} samples each (mean) | harness draw | resampled |")
  print("| --- | --- | --- | --- |")
  for r in sorted(rows, key=lambda r: (r["arm"], r["step"], r["seed"])):
    f = r["fd_chunks"]
    chunks = f"{' / '.join(f'{v:.4f}' for v in f[:4])}{' ...' if len(f) > 4 else ''}"
    print(
      f"| {r['key']} | {chunks} ({np.mean(f):.4f}) | {fmt(r['harness'])} "
      f"| {fmt(r['harness_resampled'])} |"
    )


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/default.py:fashion,mlp", help="path[:variant]")
  p.add_argument("--set", action="append", help="override, key=value (repeat), as the harness's")
  p.add_argument("--data", default="continuous", choices=list(compare_schedules.DATA))
  p.add_argument(
    "--arm",
    default="",
    choices=["", *compare_schedules.named_arms()],
    help="'' = the config's schedule",
  )
  p.add_argument("--steps", type=int, default=1500, help="training steps")
  p.add_argument("--score_steps", default="", help="steps to score at ('' = --steps only)")
  p.add_argument("--seeds", default="0,1", help="training seeds, vmapped")
  p.add_argument("--draws", default=HARNESS_DRAWS, help="sample seeds to score every run under")
  p.add_argument("--num_samples", type=int, default=1000, help="samples per draw")
  p.add_argument(
    "--conv_wgrad", choices=("auto", "conv", "taps"), default="auto", help="as the harness's"
  )
  p.add_argument("--out", default="", help="JSON lines, appended ('' = none)")
  p.add_argument(
    "--kept",
    default="",
    help="comma list of the harness's final_*.npz: score their samples in chunks of "
    "--num_samples instead of training (no --steps/--draws needed)",
  )
  p.add_argument("--results", default="", help="with --kept: the harness's results.jsonl")
  args = p.parse_args()
  if args.kept:
    config = compare_schedules.make_config(args, args.data, {}, "")
    source = load_source(config)
    rows = kept_table(
      args.kept.split(","),
      source,
      compare_schedules.reference(config, source),
      args.num_samples,
      args.results,
    )
    print_kept(rows, args.num_samples)
    if args.out:
      for r in rows:
        report.append_record(args.out, r | {"num_samples": args.num_samples})
    return
  draws = [int(s) for s in args.draws.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]
  at = sorted({int(s) for s in filter(None, args.score_steps.split(","))} or {args.steps})
  if len(draws) < 2 or args.num_samples < 2 or not 1 <= at[0] <= at[-1] <= args.steps:
    p.error("need at least two --draws, --num_samples >= 2, --score_steps in 1..--steps")

  # the harness's own config of this arm on this data kind: same keys, same hash
  arm = compare_schedules.named_arms().get(args.arm, {})
  config = compare_schedules.make_config(args, args.data, arm, args.arm)
  wgrad = compare_schedules.conv_wgrad(args, config)
  with unet_layers.tap_weight_gradients(wgrad == "taps"):
    mr = multirun.MultiRun(config, seeds)
    ref = compare_schedules.reference(mr.config, mr.source)
    h = compare_schedules.config_hash(config)
    state, bad = mr.init()
    t0, last = time.time(), 0
    for step in at:
      for k in range(last + 1, step + 1):
        state, bad, _ = mr.train_step(state, mr.batch(k - 1), bad)
      multirun.check_finite(bad, seeds, (last + 1, step))
      print(f"trained {len(seeds)} runs to step {step} ({time.time() - t0:.0f} s)", flush=True)
      fd_DR = score(mr, state, ref, draws, seeds, args.num_samples, step, args.out, h)
      print_table(fd_DR, draws, seeds, step)
      last = step


if __name__ == "__main__":
  main()
