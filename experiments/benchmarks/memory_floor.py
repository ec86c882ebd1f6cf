r"""Memory-traffic floor of the U-Net step's non-convolution work (issue 13 item 1), on any host.

The step's convolutions run in cuDNN kernels that XLA cannot fuse normalisation into, so every
GroupNorm, SiLU, dropout and residual sum is a pass over HBM of its own. This script counts,
from the model's shapes alone (jax.eval_shape, nothing is allocated), the bytes those passes
must move at the least, and the time that takes at the card's memory bandwidth: a floor under
the ~45 ms of non-convolution kernel time the H200 profile measured (BENCHMARKS.md).

The traffic model, per element of a tensor, in the compute dtype (bf16: 2 bytes), counting
only passes no fusion can avoid when convolutions are opaque kernels:
- GroupNorm (+ SiLU, + dropout) forward: one read for the statistics, one read and one write
  for the normalised output: 3 passes. Backward: one read of dy and x for the statistics of
  the gradient, one read of dy and x and one write of dx: 5 passes. 8 in all.
- dropout: the kept mask (one 32-bit word per two elements, `unet_layers.dropout`) written
  forward and read backward: 2 x 2 bytes.
- residual sum out = (h + skip) / sqrt(2): 2 reads and a write forward, and backward the two
  gradients reaching the block input summed (one extra read): 4 passes of the block output.
- attention at 16x16: the scores and softmax (B x HW x HW) written and read once each way: 4.
Optimizer, EMA and the InfoNoise estimator are counted from the parameter count (fp32: param,
grad, two moments, EMA; 9 passes), tiny at this size. Concatenations of decoder skips are
assumed fused into the next norm's reads (0 bytes), which flatters the floor.

    python experiments/benchmarks/memory_floor.py --config=configs/cifar10_infonoise.py \
      [--batch_size=512] [--shape=32,32,3] [--bandwidth_tbs=4.8,3.35]
"""

import collections
import math
import os
import sys

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp

from infonoise_jax import models
from infonoise_jax.models import unet_layers
from infonoise_jax.validation import load_config_file

NORM_PASSES = 8  # forward 3, backward 5
DROPOUT_BYTES = 4  # mask words: 2 bytes per element written, 2 read
RESIDUAL_PASSES = 4  # forward 3, backward 1
SCORE_PASSES = 4
OPTIMIZER_PASSES = 9  # fp32: read param, grad, m, v, ema; write param, m, v, ema


def count(model: nn.Module, batch: int, data_shape: tuple[int, ...]) -> dict[str, int]:
  """Elements touched by each kind of non-convolution work in one training step's forward."""
  seen = collections.Counter()

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    mod = context.module
    if context.method_name != "__call__":
      return out
    if isinstance(mod, unet_layers.GroupNorm):
      seen["norm"] += math.prod(args[0].shape)
    elif isinstance(mod, unet_layers.UNetBlock):
      n = math.prod(out.shape)
      seen["residual"] += n * (2 if mod.attention else 1)
      if mod.dropout > 0:
        seen["dropout"] += n  # conv1's input has the block's output shape
      if mod.attention:
        b, h, w, _ = out.shape
        seen["scores"] += b * (h * w) ** 2
    elif isinstance(mod, unet_layers.Conv2D):
      x, y = args[0], out[0] if isinstance(out, tuple) else out
      seen["conv_macs"] += math.prod(y.shape) * x.shape[-1] * mod.kernel**2
    return out

  x = jax.ShapeDtypeStruct((batch, *data_shape), jnp.float32)
  c = jax.ShapeDtypeStruct((batch,), jnp.float32)

  def init_and_apply(x, c):
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    v = model.init(rngs, x, c, train=False)
    with nn.intercept_methods(record):
      return v, model.apply(v, x, c, train=True, rngs={"dropout": jax.random.key(2)})

  shapes = jax.eval_shape(init_and_apply, x, c)
  seen["params"] = sum(int(v.size) for v in jax.tree.leaves(shapes[0]["params"]))
  return dict(seen)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/cifar10_infonoise.py", help="path[:variant]")
  p.add_argument("--batch_size", type=int, default=0, help="0: the config's train.batch_size")
  p.add_argument("--shape", default="32,32,3", help="per-example image shape H,W,C")
  p.add_argument(
    "--bandwidth_tbs", default="4.8,3.35", help="memory bandwidths in TB/s (H200, H100 peaks)"
  )
  p.add_argument("--dtype_bytes", type=int, default=2, help="bytes per activation (bf16: 2)")
  args = p.parse_args(argv)
  path, _, variant = args.config.partition(":")
  config = load_config_file(path, variant or None)
  if config.model.name != "unet":
    p.error(f"--config: model.name={config.model.name!r}; this counts U-Nets only")
  batch = args.batch_size or int(config.train.batch_size)
  data_shape = tuple(int(d) for d in args.shape.split(","))
  model = models.make_model(config, data_shape)
  seen = count(model, batch, data_shape)
  b = args.dtype_bytes
  rows = [
    ("GroupNorm + SiLU (+ dropout) passes", seen.get("norm", 0) * NORM_PASSES * b),
    ("dropout mask words", seen.get("dropout", 0) * DROPOUT_BYTES),
    ("residual sums", seen.get("residual", 0) * RESIDUAL_PASSES * b),
    ("attention scores and softmax", seen.get("scores", 0) * SCORE_PASSES * b),
    ("optimizer, EMA (fp32)", seen["params"] * OPTIMIZER_PASSES * 4),
  ]
  total = sum(r[1] for r in rows)
  bws = [float(v) for v in args.bandwidth_tbs.split(",")]
  print(
    f"{args.config}: batch {batch}, data {data_shape}, "
    f"{seen['params']:,} parameters, {2 * seen['conv_macs'] / batch / 1e9:.1f} GFLOP/image "
    f"forward in convolutions ({6 * seen['conv_macs'] / batch / 1e9:.1f} with the backward; "
    "dense, as cuDNN computes them: XLA's count skips taps on the padding)"
  )
  head = " | ".join(f"ms at {bw:g} TB/s" for bw in bws)
  print(f"| non-convolution work | GB per step | {head} |")
  print("| --- | --- |" + " --- |" * len(bws))
  for name, nbytes in [*rows, ("**floor, all of it**", total)]:
    ms = " | ".join(f"{nbytes / (bw * 1e12) * 1e3:.1f}" for bw in bws)
    print(f"| {name} | {nbytes / 1e9:.1f} | {ms} |")


if __name__ == "__main__":
  main()
