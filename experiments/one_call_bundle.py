r"""Binarized Fashion-MNIST and the int16 Inception weights in one carry to a lent GPU machine.

A call to the lent machines carries at most 64 MiB with the checkout. Fashion-MNIST's training
images (26 MB) and the int16 Inception weights (42 MB) do not fit together, so a binarized
comparison trained in one call and scored in the next loses everything when the machine goes
back in between (experiments/RESULTS.md sections 43-44). A binarized run reads only which side
of the half-range threshold each pixel lies on (`data.binarize`), so its data can travel as a
two-level copy: every pixel the loader turns on becomes 255, every other 0. That copy
compresses to about 1.6 MB, and with the xz-compressed weights (about 42 MB) the bundle fits
one call.

  python experiments/one_call_bundle.py pack --data_dir=.data/fm \
      --weights=.data/inception_int16.npz --out=.data/bundle      # here; carry .data/bundle
  python experiments/one_call_bundle.py unpack --bundle=.data/bundle \
      --data_dir=.data/fm_two_level --weights=.data/inception_int16.npz   # on the machine

(`bash experiments/evidence.sh bundle` and `unbundle` run these with the script's folders.)
The unpacked folder trains and scores binarized runs exactly as the original does: the loader
returns the same arrays (tests/one_call_bundle_test.py), so results agree with runs on the
original files; only the folder's digest, which names the FID reference statistics, differs.
It is not Fashion-MNIST for continuous runs: it holds a TWO_LEVEL file
(`sources.TWO_LEVEL_MARKER`), and the loader refuses the folder unless data.binarize is on
(evidence.sh refuses a continuous run on it before starting Python).
"""

import argparse
import gzip
import lzma
import os
import shutil
import sys

import numpy as np

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from infonoise_jax.data import sources  # noqa: E402

IMAGES, LABELS = sources.fashion_mnist_names("train")
TWO_LEVEL_IMAGES = "train-images-two-level.idx.xz"
WEIGHTS = "inception_int16.npz.xz"
MARKER = sources.TWO_LEVEL_MARKER


def two_level(u: np.ndarray) -> np.ndarray:
  """uint8 pixels -> 255 where data.binarize turns the pixel on, else 0 (the loader's own rule,
  `sources.images_to_float`, so the two can never disagree)."""
  on = sources.images_to_float(u.reshape(-1, 1, 1, 1), 255.0, 0, True, 1.0) > 0
  return np.where(on.reshape(u.shape), np.uint8(255), np.uint8(0))


def pack(data_dir: str, weights: str, out: str) -> dict[str, int]:
  """Writes the bundle into `out`; returns {file: bytes}."""
  images = os.path.join(data_dir, IMAGES)
  for path, fix in ((images, "apt-get install dataset-fashion-mnist, or fix --data_dir"),
                    (os.path.join(data_dir, LABELS), "fix --data_dir"),
                    (weights, "bash experiments/evidence.sh prepare writes it")):  # fmt: skip
    if not os.path.exists(path):
      raise SystemExit(f"one_call_bundle pack: missing {path} ({fix})")
  u = sources.read_idx(images)  # checks the header and the size
  header = bytes([0, 0, 8, u.ndim]) + np.array(u.shape, ">u4").tobytes()  # IDX, unsigned bytes
  os.makedirs(out, exist_ok=True)
  with lzma.open(os.path.join(out, TWO_LEVEL_IMAGES), "wb", preset=9) as f:
    f.write(header + two_level(u).tobytes())
  shutil.copyfile(os.path.join(data_dir, LABELS), os.path.join(out, LABELS))
  with open(weights, "rb") as src, lzma.open(os.path.join(out, WEIGHTS), "wb", preset=6) as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
  return {name: os.path.getsize(os.path.join(out, name)) for name in sorted(os.listdir(out))}


def unpack(bundle: str, data_dir: str, weights: str) -> None:
  """Writes the two-level Fashion-MNIST folder `data_dir` and the weights file `weights`."""
  for name in (TWO_LEVEL_IMAGES, LABELS, WEIGHTS):
    if not os.path.exists(os.path.join(bundle, name)):
      raise SystemExit(
        f"one_call_bundle unpack: {bundle} has no {name}; make the bundle with "
        "'python experiments/one_call_bundle.py pack' and carry the whole folder"
      )
  original = os.path.join(data_dir, IMAGES)
  if os.path.exists(original) and not os.path.exists(os.path.join(data_dir, MARKER)):
    raise SystemExit(
      f"one_call_bundle unpack: {data_dir} holds Fashion-MNIST already; unpack into another "
      "folder (--data_dir) so the original images stay as they are"
    )
  os.makedirs(data_dir, exist_ok=True)
  with lzma.open(os.path.join(bundle, TWO_LEVEL_IMAGES), "rb") as f:
    raw = f.read()
  with open(original, "wb") as f:  # fixed gzip header (mtime 0): the same bytes every time
    f.write(gzip.compress(raw, compresslevel=1, mtime=0))
  shutil.copyfile(os.path.join(bundle, LABELS), os.path.join(data_dir, LABELS))
  with open(os.path.join(data_dir, MARKER), "w") as f:
    f.write(
      "Two-level copy of Fashion-MNIST's training images (experiments/one_call_bundle.py): "
      "the same data as the original for data.binarize=True runs only.\n"
    )
  with lzma.open(os.path.join(bundle, WEIGHTS), "rb") as src, open(weights, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  a = sub.add_parser("pack", help="write the bundle (here)")
  a.add_argument("--data_dir", required=True, help="folder of the Fashion-MNIST .gz files")
  a.add_argument("--weights", required=True, help="the int16 Inception weights (.npz)")
  a.add_argument("--out", required=True, help="bundle folder to carry")
  b = sub.add_parser("unpack", help="write the data folder and the weights (on the machine)")
  b.add_argument("--bundle", required=True)
  b.add_argument("--data_dir", required=True, help="two-level Fashion-MNIST folder to write")
  b.add_argument("--weights", required=True, help="weights file to write")
  args = p.parse_args(argv)
  if args.command == "pack":
    sizes = pack(args.data_dir, args.weights, args.out)
    for name, size in sizes.items():
      print(f"{args.out}/{name}: {size / 2**20:.1f} MiB")
    print(
      f"bundle: {sum(sizes.values()) / 2**20:.1f} MiB (a call carries 64 MiB with the checkout)"
    )
  else:
    unpack(args.bundle, args.data_dir, args.weights)
    print(f"{args.data_dir}: two-level Fashion-MNIST (binarized runs only); {args.weights}")


if __name__ == "__main__":
  sys.exit(main())
