"""Network throughput: one jitted EDM training step (forward, backward, Adam) per model.

Models: EDM's CIFAR-10 DDPM++ and NCSN++ (configs/cifar10_edm.py, 32x32x3) and, with
`--small`, the 8x8 digits and 28x28 Fashion-MNIST presets of infonoise_jax/models. Each in
float32 and bfloat16 compute. The global batch is sharded over all local devices
(`jax.jit` with NamedSharding, data parallel); parameters are replicated. Reports compile
time, median step time over `--iters` steps (`block_until_ready` each step) and images/s.

  python experiments/benchmarks/models_bench.py [--batch_size 512] [--iters 20]
  python -m experiments.benchmarks.models_bench --small --archs ddpmpp

Prints a markdown table.
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
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs.default import get_config
from infonoise_jax import edm
from infonoise_jax.models import make_model, param_count

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _cifar_config(arch: str):
  path = os.path.join(ROOT, "configs", "cifar10_edm.py")
  spec = importlib.util.spec_from_file_location("cifar10_edm_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arch)


def _small_configs(arch: str):
  digits = get_config()
  digits.model.update(name="unet", arch=arch, model_channels=32, channel_mult=(1, 2))
  digits.model.update(num_blocks=2, attn_resolutions=(4,))
  fashion = get_config()
  fashion.model.update(name="unet", arch=arch, model_channels=64, channel_mult=(1, 2, 2))
  fashion.model.update(num_blocks=2, attn_resolutions=(14,), dropout=0.1)
  return [(f"digits {arch} 32ch", digits, (8, 8, 1)), (f"fashion {arch}", fashion, (28, 28, 1))]


def _make_step(module, optimizer, sigma_data: float):
  def loss_fn(params, x0, key):
    k_sigma, k_eps, k_drop = jax.random.split(key, 3)
    b = x0.shape[0]
    sigma = jnp.exp(-1.2 + 1.2 * jax.random.normal(k_sigma, (b,)))  # EDM log-normal
    x = edm.add_noise(x0, sigma, jax.random.normal(k_eps, x0.shape))

    def net_fn(x_in, c_noise):
      return module.apply({"params": params}, x_in, c_noise, train=True, rngs={"dropout": k_drop})

    err = edm.per_example_error(edm.denoise(net_fn, x, sigma, sigma_data), x0)
    return jnp.mean(edm.loss_weight(sigma, sigma_data) * err)

  def step(params, opt_state, x0, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, x0, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def bench(name: str, config, shape, batch_size: int, iters: int) -> dict:
  mesh = jax.make_mesh((jax.device_count(),), ("data",), (jax.sharding.AxisType.Auto,))
  data_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  module = make_model(config, shape)
  x0 = jax.device_put(np.random.default_rng(0).uniform(-1, 1, (batch_size, *shape)), data_sharding)
  x0 = x0.astype(jnp.float32)
  init = jax.jit(module.init, out_shardings=replicated)
  params = init({"params": jax.random.key(0)}, jnp.zeros((1, *shape)), jnp.zeros((1,)))["params"]
  optimizer = optax.adam(1e-4)
  opt_state = jax.jit(optimizer.init, out_shardings=replicated)(params)
  step = jax.jit(_make_step(module, optimizer, config.edm.sigma_data), donate_argnums=(0, 1))
  t0 = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, x0, jax.random.key(1))
  jax.block_until_ready(loss)
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(iters):
    t0 = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, x0, jax.random.key(2 + i))
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - t0)
  median = float(np.median(times))
  return dict(
    model=name,
    dtype=config.model.dtype,
    params=param_count(module, shape),
    compile_s=compile_s,
    step_ms=1e3 * median,
    img_s=batch_size / median,
    loss=float(loss),
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=512)
  parser.add_argument("--iters", type=int, default=20)
  parser.add_argument("--archs", nargs="+", default=["ddpmpp", "ncsnpp"])
  parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
  parser.add_argument("--small", action="store_true", help="digits / Fashion-MNIST presets")
  args = parser.parse_args()
  runs = []
  for arch in args.archs:
    runs += (
      _small_configs(arch)
      if args.small
      else [(f"cifar10 {arch}", _cifar_config(arch), (32, 32, 3))]
    )
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}, batch {args.batch_size}")
  print("| model | dtype | params | compile s | step ms | img/s | loss |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for name, config, shape in runs:
    for dtype in args.dtypes:
      config.model.dtype = dtype
      r = bench(name, config, shape, args.batch_size, args.iters)
      print(
        f"| {r['model']} | {r['dtype']} | {r['params']:,} | {r['compile_s']:.1f} | "
        f"{r['step_ms']:.1f} | {r['img_s']:.0f} | {r['loss']:.3f} |",
        flush=True,
      )


if __name__ == "__main__":
  main()
