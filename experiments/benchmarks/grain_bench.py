"""Lazy TFDS data throughput: one prefetch thread against grain worker processes.

Prepares a TFDS dataset (array_record) from the offline Fashion-MNIST files of the Debian
package `dataset-fashion-mnist` (a local builder, no download) in `--data_dir`, opens it as
`data.name=tfds:fashion_mnist_local` read lazily (one example decoded at a time, as for a
dataset too large for memory), and times `Pipeline.iterate` with `num_workers` = 0 (one
thread) and each of `--workers` (grain processes). Prints a markdown table of images/s.

  python experiments/benchmarks/grain_bench.py --data_dir=/tmp/tfds --workers=4,8,16
"""

import argparse
import io
import os
import sys
import time

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import tensorflow_datasets as tfds
from PIL import Image

from infonoise_jax.data import Pipeline
from infonoise_jax.data.sources import read_idx, tfds_source
from infonoise_jax.validation import default_config

FILES = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST from local idx files (`FASHION_MNIST_DIR`, default the Debian package's)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(28, 28, 1)),
          "label": tfds.features.ClassLabel(num_classes=10),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    return {split: self._generate_examples(split) for split in FILES}

  def _generate_examples(self, split):
    folder = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
    images, labels = (read_idx(os.path.join(folder, f)) for f in FILES[split])
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
      png = io.BytesIO()  # encoded here: tfds encodes numpy images with TensorFlow
      Image.fromarray(image).save(png, format="PNG")
      yield i, {"image": io.BytesIO(png.getvalue()), "label": int(label)}


def _rate(pipeline: Pipeline, num_workers: int, num_batches: int) -> float:
  """Sustained images/s: batches are timed only after every buffer has filled once."""
  buffer_size = 2
  warmup = buffer_size * (num_workers + 1) + 2
  with pipeline.iterate(0, buffer_size=buffer_size, num_workers=num_workers) as batches:
    for _ in range(warmup):
      next(batches)
    start = time.perf_counter()
    for _ in range(num_batches):
      next(batches)
    return num_batches * pipeline.local_batch_size / (time.perf_counter() - start)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data_dir", default="/tmp/tfds_fashion")
  p.add_argument("--workers", default="4,8,16", help="grain worker counts to time")
  p.add_argument("--batch_size", type=int, default=256, help="the fashion config's batch")
  p.add_argument("--num_batches", type=int, default=80)
  args = p.parse_args()
  t0 = time.perf_counter()
  builder = FashionMnistLocal(data_dir=args.data_dir, file_format="array_record")
  builder.download_and_prepare()
  print(f"prepared in {time.perf_counter() - t0:.0f} s: {builder.data_dir}", file=sys.stderr)
  c = default_config()
  c.data.tfds_data_dir = args.data_dir
  source = tfds_source("fashion_mnist_local", c.data, in_memory=False)  # as for a large set
  pipeline = Pipeline(source, args.batch_size, seed=0)
  print(f"{os.cpu_count()} CPUs, batch {args.batch_size}, {args.num_batches} batches")
  print("| batches made by | images/s |")
  print("|---|---|")
  print(f"| one thread (num_workers=0) | {_rate(pipeline, 0, args.num_batches // 4):,.0f} |")
  for k in (int(w) for w in args.workers.split(",")):
    print(f"| {k} grain processes | {_rate(pipeline, k, args.num_batches):,.0f} |")


if __name__ == "__main__":
  main()
