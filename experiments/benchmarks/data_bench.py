"""Host data throughput: batches/s and images/s of `Pipeline.iterate` (prefetch thread).

Sources: scikit-learn digits, Fashion-MNIST from the Debian package (skipped if absent) and
a random in-memory array of CIFAR-10 size (50000 x 32x32x3 float32, about 600 MB). For each
it times the bare producer `pipeline.batch(step)` and the consumer side of `iterate`, with
and without random flips; `--device_put` also copies each batch to the default device.

  python experiments/benchmarks/data_bench.py [--batch_size 512] [--num_batches 200]
  python -m experiments.benchmarks.data_bench --device_put

Prints a markdown table.
"""

import argparse
import os
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import numpy as np

from configs.default import get_config
from infonoise_jax.data import Pipeline, Source, load_source


def _cifar_size_source() -> Source:
  rng = np.random.default_rng(0)
  x = rng.uniform(-1.0, 1.0, (50000, 32, 32, 3)).astype(np.float32)
  return Source("array 50000x32x32x3 (cifar10 size)", (32, 32, 3), len(x), True, 1.0, array=x)


def _sources(fashion_dir: str) -> list[Source]:
  c = get_config()
  found = [load_source(c)]  # digits
  c.data.name, c.data.local_dir = "fashion_mnist_local", fashion_dir
  try:
    found.append(load_source(c))
  except FileNotFoundError as e:
    print(f"skipping fashion_mnist_local: {e}", file=sys.stderr)
  found.append(_cifar_size_source())
  return found


def _time_batches(pipeline: Pipeline, num_batches: int, warmup: int) -> float:
  for step in range(warmup):
    pipeline.batch(step)
  start = time.perf_counter()
  for step in range(warmup, warmup + num_batches):
    pipeline.batch(step)
  return num_batches / (time.perf_counter() - start)


def _time_iterate(pipeline: Pipeline, num_batches: int, warmup: int, device_put: bool) -> float:
  put = None
  if device_put:
    import jax

    put = lambda x: jax.device_put(x).block_until_ready()
  with pipeline.iterate(0, buffer_size=2) as it:
    for _ in range(warmup):
      batch = next(it)
      if put:
        put(batch)
    start = time.perf_counter()
    for _ in range(num_batches):
      batch = next(it)
      if put:
        put(batch)
    return num_batches / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=512)
  parser.add_argument("--num_batches", type=int, default=200)
  parser.add_argument("--warmup", type=int, default=10)
  parser.add_argument("--device_put", action="store_true", help="copy each batch to device")
  parser.add_argument("--fashion_dir", default="/usr/share/datasets/fashion-mnist")
  args = parser.parse_args()

  rows = []
  for source in _sources(args.fashion_dir):
    for flip in (False, True):
      pipeline = Pipeline(source, args.batch_size, seed=0, random_flip=flip)
      produce = _time_batches(pipeline, args.num_batches, args.warmup)
      consume = _time_iterate(pipeline, args.num_batches, args.warmup, args.device_put)
      mb = consume * args.batch_size * int(np.prod(source.shape)) * 4 / 2**20
      rows.append(
        f"| {source.name} | {source.shape} | {source.num_examples} | {flip} | "
        f"{produce:,.0f} | {consume:,.0f} | {consume * args.batch_size:,.0f} | {mb:,.0f} |"
      )
  put = ", incl. device_put" if args.device_put else ""
  print(f"\nbatch {args.batch_size}, {args.num_batches} batches, {os.cpu_count()} CPUs{put}\n")
  print("| source | shape | N | flip | batch() batches/s | iterate batches/s | images/s | MB/s |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  print("\n".join(rows))


if __name__ == "__main__":
  main()
