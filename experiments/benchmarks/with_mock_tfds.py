"""Runs a module (`python -m <module> <args>`) with TFDS datasets replaced by random examples.

For timing commands on datasets a machine cannot download (CIFAR-10 on the offline GPU hosts):
`tfds.testing.mock_data` serves `num_examples` random examples of the dataset's real features
(shape, dtype) from its builder's code, so the data pipeline, the model and the evaluation run
exactly as on the real data. Only for benchmarks: what is learned from such data is noise.

  python experiments/benchmarks/with_mock_tfds.py --num_examples=10000 -- \
      infonoise_jax.main --config=configs/cifar10_infonoise.py --workdir=/tmp/c10
"""

import argparse
import os
import runpy
import sys

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))


def main(argv: list[str]) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--num_examples", type=int, default=10000, help="examples per split")
  p.add_argument("module", help="module to run as __main__, e.g. infonoise_jax.main")
  p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
  a = p.parse_args(argv)
  import tensorflow_datasets as tfds

  sys.argv = [a.module, *a.args]
  policy = tfds.testing.MockPolicy.USE_CODE
  with tfds.testing.mock_data(num_examples=a.num_examples, policy=policy):
    runpy.run_module(a.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main(sys.argv[1:])
