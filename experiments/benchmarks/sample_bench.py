"""Sampling throughput: per-sample keys (infonoise_jax.sample) vs one batched draw.

`Sampler.draw` gives sample j its own key fold_in(key(seed), j) by vmapping the sampler over
single samples, so samples do not depend on batch size or device count. This checks that
the vmap costs nothing against `solvers.sample` on the whole batch, for EDM's CIFAR-10
DDPM++ (configs/cifar10_edm.py; random weights, 18 Heun steps = 35 evaluations), batch
sharded over all local devices. Prints a markdown table of ms per batch and images/s.

  python experiments/benchmarks/sample_bench.py [--batch_sizes 250 500] [--iters 3] [--small]
"""

import argparse
import importlib.util
import os
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from infonoise_jax import solvers, steps
from infonoise_jax.mesh import make_mesh
from infonoise_jax.model_sampler import Sampler
from infonoise_jax.models import make_model
from infonoise_jax.schedules import make_schedule

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _config(small: bool):
  name = "test.py" if small else "cifar10_edm.py"
  spec = importlib.util.spec_from_file_location("bench_config", os.path.join(ROOT, "configs", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(), ((8, 8, 1) if small else (32, 32, 3))


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
  p.add_argument("--batch_sizes", type=int, nargs="+", default=[250, 500])
  p.add_argument("--iters", type=int, default=3)
  p.add_argument("--small", action="store_true", help="the tiny MLP of configs/test.py")
  a = p.parse_args()
  config, shape = _config(a.small)
  model = make_model(config, shape)
  x, c = jnp.zeros((1, *shape)), jnp.zeros((1,))
  params = jax.jit(lambda: model.init({"params": jax.random.key(0)}, x, c, train=False))()
  sampler = Sampler(config, model, make_schedule(config), make_mesh(), shape)
  params = jax.device_put(params["params"], NamedSharding(sampler.mesh, P()))
  sigmas = solvers.make_sigmas(config)
  denoise = steps.make_denoiser(config, model)
  print(f"{jax.devices()[0].device_kind} x {jax.device_count()}, {config.sampler.num_steps} steps")
  print("| batch | per-sample keys ms | batched ms | per-sample img/s | batched img/s |")
  print("| --- | --- | --- | --- | --- |")
  for batch in a.batch_sizes:
    batch = sampler.round_batch(batch, batch)
    keyed = sampler.draw_fn(batch)
    batched = jax.jit(
      lambda p, k, s, b=batch: solvers.sample(
        lambda x, sg: denoise(p, x, sg), k, (b, *shape), s, sharding=sampler.data_sharding
      ),
      out_shardings=sampler.data_sharding,
    )
    _, t_keyed = _time(keyed, (params, jax.random.key(0), 0, sigmas), a.iters)
    _, t_batched = _time(batched, (params, jax.random.key(0), sigmas), a.iters)
    print(
      f"| {batch} | {1e3 * t_keyed:.1f} | {1e3 * t_batched:.1f} | {batch / t_keyed:.0f} | "
      f"{batch / t_batched:.0f} |",
      flush=True,
    )


if __name__ == "__main__":
  main()
