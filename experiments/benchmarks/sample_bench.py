"""Sampling throughput: images/s, the FLOP rate it reaches, and how far it is from a bound.

`Sampler.draw` gives sample j its own key fold_in(key(seed), j) by vmapping the sampler over
single samples, so samples do not depend on batch size or device count. This times that
program (`keyed`, what `python -m infonoise_jax.sample` / `evaluate` run) and, with
`--modes keyed batched`, `solvers.sample` on the whole batch, for EDM's CIFAR-10 DDPM++
(configs/cifar10_edm.py; random weights, 18 Heun steps = 35 evaluations) or any config, batch
sharded over all local devices. The ODE state stays float32; the network computes in
`--dtype` (model.dtype).

FLOPs per sample: the matmul + convolution count of one denoiser call (`flops.jaxpr_flops`)
x the sampler's network evaluations. With `--bound_tflops` (the FLOP rate the training step
reaches on the same card, e.g. from train_step_bench.py) it prints the images/s that rate
would allow and the ratio bound / measured.

  python experiments/benchmarks/sample_bench.py [--batch_sizes 250 500] [--iters 3] [--small]
  python experiments/benchmarks/sample_bench.py --dtype=bfloat16 \
      --batch_sizes 500 1000 2000 --bound_tflops 409
"""

import argparse
import os
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from infonoise_jax import flops, solvers, steps
from infonoise_jax.mesh import make_mesh
from infonoise_jax.model_sampler import Sampler
from infonoise_jax.models import make_model
from infonoise_jax.schedules import make_schedule

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step_bench import config_for, resolve_token_sigma_data  # noqa: E402

MODES = ("keyed", "batched")


def _time(fn, args, iters: int) -> tuple[float, float]:
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(iters):
    jax.block_until_ready(fn(*args))
  return compile_s, (time.perf_counter() - t0) / iters


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/cifar10_edm.py", help="config file[:variant]")
  p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
  p.add_argument("--dtype", default="float32", help="network compute dtype (model.dtype)")
  p.add_argument("--shape", default="32,32,3", help="per-example data shape H,W,C")
  p.add_argument("--batch_sizes", type=int, nargs="+", default=[250, 500])
  p.add_argument("--iters", type=int, default=3)
  p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
  p.add_argument("--bound_tflops", type=float, default=0.0, help="FLOP rate of the bound")
  p.add_argument("--small", action="store_true", help="the tiny MLP of configs/test.py")
  a = p.parse_args()
  config = config_for("configs/test.py" if a.small else a.config, a.dtype, overrides=a.set)
  shape = (8, 8, 1) if a.small else tuple(int(n) for n in a.shape.split(","))
  resolve_token_sigma_data(config, shape)
  model = make_model(config, shape)
  x, c = jnp.zeros((1, *shape)), jnp.zeros((1,))
  params = jax.jit(lambda: model.init({"params": jax.random.key(0)}, x, c, train=False))()
  sampler = Sampler(config, model, make_schedule(config), make_mesh(), shape)
  params = jax.device_put(params["params"], NamedSharding(sampler.mesh, P()))
  sigmas = solvers.make_sigmas(config)
  denoise = steps.make_denoiser(config, model)
  s = config.sampler
  evals = solvers.num_evaluations(s.num_steps, s.name)
  x8, sig8 = jnp.zeros((8, *shape)), jnp.ones((8,))
  per_eval = flops.jaxpr_flops(jax.make_jaxpr(denoise)(params, x8, sig8)) / 8
  per_sample = per_eval * evals
  print(
    f"{jax.devices()[0].device_kind} x {jax.device_count()}, jax {jax.__version__}, "
    f"{s.name} {s.num_steps} steps ({evals} evaluations), network {config.model.dtype}, "
    f"{per_eval / 1e9:.2f} GFLOP per evaluation, {per_sample / 1e12:.3f} TFLOP per sample"
  )
  if a.bound_tflops > 0:
    bound = a.bound_tflops * 1e12 / per_sample
    print(f"bound at {a.bound_tflops:g} TFLOP/s: {bound:.0f} images/s")
  print("| mode | batch | compile s | ms per batch | images/s | TFLOP/s | bound / measured |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for batch in a.batch_sizes:
    batch = sampler.round_batch(batch, batch)
    fns = {
      "keyed": (sampler.draw_fn(batch), (params, jax.random.key(0), 0, sigmas)),
      "batched": (
        jax.jit(
          lambda p, k, sg, b=batch: solvers.sample(
            lambda x, sig: denoise(p, x, sig),
            k,
            (b, *shape),
            sg,
            method=s.name,
            sharding=sampler.data_sharding,
          ),
          out_shardings=sampler.data_sharding,
        ),
        (params, jax.random.key(0), sigmas),
      ),
    }
    for mode in a.modes:
      fn, args = fns[mode]
      compile_s, t = _time(fn, args, a.iters)
      rate = batch / t
      ratio = f"{a.bound_tflops * 1e12 / per_sample / rate:.2f}" if a.bound_tflops > 0 else "-"
      print(
        f"| {mode} | {batch} | {compile_s:.1f} | {1e3 * t:.1f} | {rate:.0f} | "
        f"{rate * per_sample / 1e12:.0f} | {ratio} |",
        flush=True,
      )


if __name__ == "__main__":
  main()
