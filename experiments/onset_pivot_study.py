"""Why does the automatic gate pivot land so low on learned errors? Rule vs estimator vs data.

Trains InfoNoise (onset gate) with one config and, at the end, applies the same onset rule
(profiles.onset_pivot) to three profiles of the same data on the estimator's grid:

  estimator  the schedule state's m_K (what the run used: EMA of training-batch errors, each bin
             last refreshed when it was last sampled);
  model      held-out errors of the final network (diagnose.error_profile, raw params: the
             network the estimator was measuring), every bin measured now;
  data       the per-pixel Bayes profile of the data's pixel-value histogram (exact for
             independent pixels; an upper bound on the mmse that ignores spatial context).

  python experiments/onset_pivot_study.py --config=configs/default.py:fashion,mlp \
      --set=data.image_size=14 --steps=1500 --out=/tmp/pivot

If `estimator` is low but `model` is not, the estimator is at fault (stale or noisy bins);
if both are low but `data` is not, it is what the network learned; if all three are, the data.
Prints one JSON line; writes pivot_profiles.png and pivot.npz under --out.
"""

import argparse
import json
import os
import sys

if not __package__:
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import jax
import jax.numpy as jnp
import numpy as np

from infonoise_jax import diagnose, profiles, steps, train
from infonoise_jax.evaluation import plots
from infonoise_jax.validation import load_config_file, parse_overrides


def pixel_prior_mmse(x_NX: np.ndarray, sigma_G: np.ndarray, seed: int = 0, n: int = 20000):
  """Per-dim Bayes mmse under the data's pixel-value histogram, pixels independent (MC)."""
  vals, counts = np.unique(x_NX.ravel(), return_counts=True)
  p = counts / counts.sum()
  rng = np.random.default_rng(seed)
  out = []
  for s in sigma_G:
    j = rng.choice(len(vals), n, p=p)
    x = vals[j] + s * rng.standard_normal(n)
    logw = np.log(p)[None] - 0.5 * (x[:, None] - vals[None]) ** 2 / s**2
    w = np.exp(logw - logw.max(1, keepdims=True))
    post = (w @ vals) / w.sum(1)
    out.append(np.mean((post - vals[j]) ** 2))
  return np.asarray(out)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/default.py:fashion,mlp")
  p.add_argument("--set", action="append")
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--out", required=True)
  args = p.parse_args()
  path, _, variant = args.config.partition(":")
  c = load_config_file(path, variant) if variant else load_config_file(path)
  c.update_from_flattened_dict(parse_overrides(args.set))
  c.schedule.name = "infonoise"
  c.train.num_steps = args.steps
  run = train.Run(c, "/tmp/unused", devices=jax.devices()[:1])
  state = run.init_fn()
  pivots = []
  for step in range(1, args.steps + 1):
    state, _ = run.train_step(state, run.global_batch(run.pipeline.batch(step - 1)))
    if step % 100 == 0:
      pivots.append((step, float(state.schedule_state["gate_pivot"])))
  sched, s = run.schedule, state.schedule_state
  x_K = np.asarray(sched.grid.centres())
  sigma_K = np.exp(x_K)
  thr = c.schedule.infonoise.onset_threshold
  q_est = np.asarray(sched._entropy_rate(s["m_K"]))  # smoothed exactly as the schedule does
  held, _ = diagnose.held_out(c, 2000)
  denoise = steps.make_denoiser(c, run.model)
  m_model = diagnose.error_profile(lambda x, sg: denoise(state.params, x, sg), held, sigma_K)
  m_data = pixel_prior_mmse(run.source.array[:5000], sigma_K)
  onset = lambda q: float(profiles.onset_pivot(jnp.asarray(x_K), jnp.asarray(q), thr))
  q_model, q_data = m_model / sigma_K**2, m_data / sigma_K**2
  seen = np.asarray(s["seen_K"])
  res = {
    "config": args.config,
    "set": args.set,
    "steps": args.steps,
    "pivot_history": pivots,
    "pivot_estimator": onset(q_est),
    "pivot_model_heldout": onset(q_model),
    "pivot_pixel_bayes": onset(q_data),
    "lowest_seen_sigma": float(sigma_K[np.argmax(seen)]) if seen.any() else None,
    "q_est_lowest": float(q_est[0]),
    "q_model_lowest": float(q_model[0]),
    "q_est_at_0.05": float(np.interp(np.log(0.05), x_K, q_est)),
    "q_model_at_0.05": float(np.interp(np.log(0.05), x_K, q_model)),
  }
  os.makedirs(args.out, exist_ok=True)
  np.savez(
    os.path.join(args.out, "pivot.npz"),
    x_K=x_K,
    q_est=q_est,
    q_model=q_model,
    q_data=q_data,
    seen=seen,
  )
  curves = {"estimator q (m_K)": q_est, "final model, held out": q_model, "pixel Bayes": q_data}
  markers = {f"c {k}": np.log(res[f"pivot_{k}"]) for k in ("estimator", "model_heldout")}
  img = plots.schedule_plot(x_K, curves, "q = mmse / sigma^2", markers=markers, normalize=False)
  plots.save_png(os.path.join(args.out, "pivot_profiles.png"), img)
  print(json.dumps(res), flush=True)


if __name__ == "__main__":
  main()
