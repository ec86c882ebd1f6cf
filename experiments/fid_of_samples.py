"""FID of saved sample arrays against Fashion-MNIST's (or your own images') statistics, on a CPU.

The GPU runs of compare_schedules.py (--save_samples) bring back their final samples as one
compressed .npz per dataset and arm (e.g. `final_continuous_lognormal.npz`), one array per run
named `<arm>__seed<k>__step<N>`: uint8 (num, 28, 28, 1), quantized on the data's range with
`images.to_uint8`. The GPU hosts cannot carry the FID Inception weights (docs/fid.md), so FID is
computed here (--samples: a comma list of files):

  python experiments/fid_of_samples.py \
      --samples=final_continuous_infonoise.npz,final_continuous_lognormal.npz --out=fid.jsonl
  python experiments/fid_of_samples.py --samples=$(ls final_binarized_*.npz | paste -sd,) \
      --binarize --out=fid.jsonl

Reference: `--reference_num` images of the Fashion-MNIST train split (a fixed random subset,
permutation seed 0), read by the training data loader (`data.load_source`, so --binarize is
data.binarize's rule) and quantized like the samples. Their statistics are cached next to
--out as `fid_ref_<reference>_<data>_train_<reference_num>[_binarized].npz`, <data> a digest of
the train images file (`sources.fashion_mnist_fingerprint` of --data_dir, else the config's
data.local_dir, as the trainer's reference cache names it); a second run on the same files
reads them, wherever they lie. Samples of a run on your own images (data.name='images') are
scored against those images with `--reference=images --data_path=<the run's data.path>` (their
digest is the trainer's FID cache's, from the files' names, sizes and modification times):

  python experiments/fid_of_samples.py --samples=final_continuous_lognormal.npz \
      --reference=images --data_path=my_images/ --reference_num=5000 --out=fid.jsonl

Samples of a run on a tfds image set (data.name='tfds:<name>') are scored against that set,
read lazily from the tfds folder the run read (--data_dir: its data.tfds_data_dir; '' = tfds's
default; --image_key: another image feature), keyed by that folder's digest:

  python experiments/fid_of_samples.py --samples=final_continuous_lognormal.npz \
      --reference=tfds:cifar10 --out=fid.jsonl

The reference is read at its native size; a run trained with data.image_size=S (the loader's
box averaging) is scored with `--image_size=S`, which resizes the reference through the same
loader (the cached statistics' name and every line get `image_size`). Samples whose height is
not --image_size (or, without it, whose file records another data.image_size) are refused
before the reference is read or the network built, naming the --image_size that fits.

Each samples file records what its samples were trained on (compare_schedules since
2026-12-06: `sources.data_identity` as JSON under the entry `__data__`, which is not scored):
data.name, binarized or not, and the digest this script's reference is keyed by. A file whose
data is not the reference asked for (--reference, --data_dir / --data_path, --binarize) is
refused before the network is built or any image read, with an error naming both and the
flags that score it (e.g. samples of your own images given without --reference=images, or a
binarized run's without --binarize); samples of data it has no reference for (digits, Gaussian
mixtures, ...) likewise. Your own images copied to another folder or machine (another digest, which
hashes the folder and file times) pass if their names and sizes match. Files without the
record (earlier runs, experiments/results/) are scored as asked, with an info line.

--out gets JSON lines, append-only:
  kind=fid    one per array: samples (file name), key, arm, seed, step, num, fid, seconds, ...
  kind=floor  one per sample count `num`: FID of `num` real training images outside the
              reference subset, against the reference statistics: what a perfect model would
              score with `num` samples (FID is biased upwards at small counts).
Arrays are scored latest step first, and within a step seed by seed with the arms (files)
interleaved: a run cut short (a lent machine's time limit) keeps the comparisons that matter
most instead of one file's every array (RESULTS.md section 28 lost one arm whole to file order).
A rerun skips every line already there (same samples file, key, reference, its data digest
`reference_data`, reference_num, binarize, num), so it never duplicates one, and other data
files get lines of their own (lines written before the digest was recorded are not matched:
give a new --out); an array whose content differs from the one scored under the
same identity is an error (use another --out).

CPU cost: the Inception runs at 299x299 whatever the input size. Measured on this project's
2-core CPU machine (jax 0.10.2, one CPU device, batch 50; other jobs share the cores, so the
rate varies with them): 5.7 images/s at load average ~2 (7 at batch 16), 3.35 images/s over
a whole 13000-image run at load average 4-6. So the 10000-image reference takes 30-50 min
(once: then cached), 2048 samples 6-10 min, plus as long again for the floor at that count
(once per count). The script prints the rate it gets (images/s through the feature
extractor, compilation excluded).

Sanity check (2026-12-01, experiments/results/fid_cpu_sanity_2026-12-01.jsonl): the first 1000
Fashion-MNIST test images score 15.66 against a floor of 15.59 at 1000 samples; the same
images with Gaussian noise of std 25.5 grey levels added (rounded, clipped) score 122.3.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator

if not __package__:  # run as a script: make the repository root importable
  sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import jax
import numpy as np

from infonoise_jax.data import load_source
from infonoise_jax.data.sources import (
  OWN_IMAGES,
  SAMPLES_DATA_KEY,
  Source,
  data_identity,
  same_data,
  samples_data_record,
  tfds_set,
  tfds_source,
)
from infonoise_jax.evaluation import fid, images, inception, report
from infonoise_jax.mesh import configure_compilation_cache
from infonoise_jax.sample_files import written_by_write_samples
from infonoise_jax.validation import DEFAULT_CONFIG_PATH, load_config_file

# --reference -> variant of configs/default.py; `images`: your own at --data_path (data.name);
# besides these, any tfds image set as `tfds:<name>` (its data.name), read from --data_dir
REFERENCES = {"fashion": "fashion", OWN_IMAGES: ""}
DATA_REFERENCE = {"fashion_mnist_local": "fashion", OWN_IMAGES: OWN_IMAGES}  # data.name -> it
DATA_NAME = {ref: name for name, ref in DATA_REFERENCE.items()}  # --reference -> data.name


def is_tfds(reference: str) -> bool:
  return tfds_set(reference) is not None


def reference_of(data_name: str | None) -> str | None:
  """The --reference that scores samples trained with data.name=`data_name`; None: none."""
  return data_name if is_tfds(data_name or "") else DATA_REFERENCE.get(data_name)


def data_name_of(reference: str) -> str:
  return reference if is_tfds(reference) else DATA_NAME[reference]


SUBSET_SEED = 0  # permutation of the train split: reference subset first, floor images next
KEY_RE = re.compile(r"^(?P<arm>.+?)__seed(?P<seed>\d+)__step(?P<step>\d+)$")
ID_FIELDS = (
  "kind", "samples", "key", "reference", "reference_data", "reference_num", "binarize", "num",
  "image_size",
)  # fmt: skip


def parse_key(key: str) -> tuple[str, int, int]:
  """'<arm>__seed<k>__step<N>' -> (arm, k, N); ValueError for any other name."""
  m = KEY_RE.match(key)
  if not m:
    raise ValueError(f"array name {key!r} is not '<arm>__seed<k>__step<N>'")
  return m["arm"], int(m["seed"]), int(m["step"])


def record_id(rec: dict) -> tuple:
  return tuple(rec.get(k) for k in ID_FIELDS)


def scoring_order(rec: dict) -> tuple:
  """Latest step first; within it seed by seed, every arm's array of that seed together."""
  return (-rec["step"], rec["seed"], rec["arm"], rec["samples"])


def content_hash(x: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]


def reference_config(
  reference: str,
  binarize: bool,
  data_dir: str = "",
  data_path: str = "",
  image_size: int = 0,
  image_key: str = "image",
):
  """The data config the reference is read with (--data_dir: Fashion-MNIST's IDX files'
  folder, or the tfds data_dir of --reference=tfds:<name>, '' = tfds's default; --data_path:
  the file or folder of your own images, --reference=images; --image_size: data.image_size,
  0 = native; --image_key: a tfds set's image feature)."""
  variant = ",".join(filter(None, (REFERENCES.get(reference, ""), "binarized" if binarize else "")))
  config = load_config_file(str(DEFAULT_CONFIG_PATH), variant)
  config.data.split, config.data.image_size = "train", image_size
  if reference == OWN_IMAGES:
    config.data.update({"name": OWN_IMAGES, "path": data_path})
  elif is_tfds(reference):
    config.data.update({"name": reference, "tfds_data_dir": data_dir, "image_key": image_key})
  elif data_dir:
    config.data.local_dir = data_dir
  return config


def reference_identity(
  reference: str, data_dir: str = "", data_path: str = "", image_key: str = "image"
) -> dict:
  """sources.data_identity of the reference's data, as compare_schedules records it with
  saved samples: `reference_data`, the digest the trainer's reference cache names the data by
  (Fashion-MNIST's train images file; your own images' names, sizes and times; a tfds set's
  resolved folder), so other files never share statistics or records, for your own images
  `listing` (names and sizes), for a tfds set's other image feature `image_key`."""
  config = reference_config(reference, False, data_dir, data_path, image_key=image_key)
  return data_identity(config.data)


def reference_data(reference: str, data_dir: str = "", data_path: str = "") -> str:
  """The digest of the reference's data (`reference_identity`)."""
  return reference_identity(reference, data_dir, data_path)["reference_data"]


def read_samples(path: str) -> tuple[dict[str, np.ndarray], dict | None]:
  """(arrays by name, the data record compare_schedules wrote or None for older files)."""
  with np.load(os.path.expanduser(path)) as f:
    arrays = {k: f[k] for k in f.files if k != SAMPLES_DATA_KEY}
    record = samples_data_record(f)
  return arrays, record


def describe_data(reference: str, binarize: bool, where: str = "", digest: str = "") -> str:
  what = "Fashion-MNIST" if reference == "fashion" else f"your own images ({OWN_IMAGES})"
  what = f"the tfds set {tfds_set(reference)}" if is_tfds(reference) else what
  what += f" at {where}" if where else ""
  what += f" (digest {digest})" if digest else ""
  return what + (", binarized" if binarize else ", not binarized")


def fix_flags(
  reference: str, binarize: bool, where: str, image_size: int = 0, image_key: str = "image"
) -> str:
  if reference == OWN_IMAGES:
    flags = f"--reference=images --data_path={where or '<the run data.path>'}"
  else:
    flags = f"--reference={reference}" + (f" --data_dir={where}" if where else "")
  flags += f" --image_size={image_size}" if image_size else ""
  flags += f" --image_key={image_key}" if image_key != "image" else ""
  return flags + (" --binarize" if binarize else " (without --binarize)")


def check_samples_data(
  path: str,
  record: dict | None,
  reference: str,
  data_digest: str,
  binarize: bool,
  listing: str = "",
  log: Callable[[str], None] = print,
  image_size: int = 0,
  image_key: str = "image",
) -> None:
  """Refuses samples whose recorded data (sources.data_identity, written by compare_schedules
  --save_samples) is not the reference asked for: data set, its digest, binarization, image
  size (--image_size; records written before they held data.image_size are not checked), a
  tfds set's image feature (--image_key). The
  same own images at another folder or machine (another own_images_fingerprint, as it hashes
  the folder and modification times) pass on their names and sizes (`listing`). Files
  without a record (written before 2026-12-06) are scored as asked, with an info line."""
  asked = describe_data(reference, binarize, digest=data_digest)
  if record is None:
    log(
      f"info: {path} does not record the data its samples were trained on (written before "
      f"2026-12-06); scored against {asked} as asked: check --reference and --binarize"
    )
    if ("binarized" in os.path.basename(path)) != binarize:
      log(f"warning: {path} scored with --binarize={binarize}; check the flag")
    return
  ref = reference_of(record.get("data"))
  if ref is None:
    raise ValueError(
      f"{path}: its samples were trained on data.name={record.get('data')!r}; fid_of_samples "
      "has references for fashion_mnist_local (--reference=fashion), your own images "
      "(data.name='images': --reference=images --data_path=<data.path>) and tfds image sets "
      "(data.name='tfds:<name>': --reference=tfds:<name> --data_dir=<data.tfds_data_dir>) only"
    )
  trained = record.get("binarized", False)
  asked_data = {"data": data_name_of(reference), "binarized": binarize}
  asked_data["reference_data"] = data_digest
  asked_data |= {"image_key": image_key} if image_key != "image" else {}
  same = same_data(record, asked_data | ({"listing": listing} if listing else {}))
  if same and record.get("reference_data") != data_digest:  # matched on names and sizes
    log(
      f"{path}: its images' digest {record.get('reference_data')} differs (folder or file "
      "times); their names and sizes match those at --data_path: scored against them"
    )
  size = record.get("image_size", image_size)  # (not recorded before 2026-12-06 evening)
  if not same or size != image_size:
    where = record.get("where", "")
    at = lambda s: f" at data.image_size={s}" if s else " at their native size"
    trained_on = describe_data(ref, trained, where, record.get("reference_data") or "")
    raise ValueError(
      f"{path}: its samples were trained on {trained_on}{at(size)}, but the reference asked "
      f"for is {asked}{at(image_size)}; score them with "
      + fix_flags(ref, trained, where, size, record.get("image_key", "image"))
    )


class SourceImages:
  """A data source's images as uint8 NHWC by index (`len`, `shape`, `[indices]`), read when
  indexed: a tfds set is read lazily, only the reference subset and floor images."""

  def __init__(self, source: Source):
    self.source, self.shape = source, (source.num_examples, *source.shape)

  def __len__(self) -> int:
    return self.source.num_examples

  def __getitem__(self, indices: np.ndarray) -> np.ndarray:
    x = self.source.get(np.asarray(indices))
    return images.to_uint8(x, (-self.source.scale, self.source.scale))


def train_images(config) -> np.ndarray | SourceImages:
  """The train split of `config`'s data (`reference_config`) as uint8 NHWC, through the
  training data loader (resized to data.image_size as training data is): in memory, but for a
  tfds set, whose images are read when indexed (SourceImages)."""
  d = config.data
  if is_tfds(d.name):
    return SourceImages(tfds_source(tfds_set(d.name), d, in_memory=False))
  source = load_source(config)
  return images.to_uint8(source.array, (-source.scale, source.scale))


def split_indices(num_train: int, reference_num: int) -> tuple[np.ndarray, np.ndarray]:
  """(reference subset, the other images in a fixed order: floor images are its first)."""
  perm = np.random.default_rng(SUBSET_SEED).permutation(num_train)
  return perm[:reference_num], perm[reference_num:]


def batches(
  x: np.ndarray, batch_size: int, what: str = "", log: Callable[[str], None] | None = None
) -> Iterator[np.ndarray]:
  """`x` in chunks of `batch_size`; with `log`, a progress line about every 1000 images."""
  t0, every = time.perf_counter(), max(1000 // batch_size, 1) * batch_size
  for start in range(0, len(x), batch_size):
    yield x[start : start + batch_size]
    done = min(start + batch_size, len(x))
    if log and done % every == 0 and done < len(x):
      rate = done / (time.perf_counter() - t0)
      log(f"{what}: {done}/{len(x)} images, {rate:.2f} images/s")


class TimedExtractor:
  """Wraps a feature function, counting images and seconds (the first call, which
  compiles, is kept apart so the rate is the steady one)."""

  def __init__(self, extractor: fid.FeatureFn):
    self.extractor, self.calls, self.images, self.seconds = extractor, 0, 0, 0.0

  def __call__(self, images_NHWC: np.ndarray) -> np.ndarray:
    t0 = time.perf_counter()
    out = self.extractor(images_NHWC)
    if self.calls:
      self.images += len(images_NHWC)
      self.seconds += time.perf_counter() - t0
    self.calls += 1
    return out

  def rate(self) -> float | None:
    return self.images / self.seconds if self.seconds > 0 else None


def make_extractor(weights: str, batch_size: int) -> fid.FeatureFn:
  return fid.make_feature_extractor(inception.load_params(weights), batch_size=batch_size)


def floor_record(num: int, tag: dict) -> dict:
  return {"kind": "floor", "key": "floor", "num": num, **tag}


def score(
  sample_paths: list[str],
  out: str,
  make_extractor_fn: Callable[[], fid.FeatureFn],
  load_train_fn: Callable[[], np.ndarray | SourceImages],
  data_digest: str,
  reference: str = "fashion",
  reference_num: int = 10000,
  binarize: bool = False,
  num: int = 0,
  batch_size: int = 50,
  log: Callable[[str], None] = print,
  listing: str = "",
  image_size: int = 0,
  image_key: str = "image",
) -> list[dict]:
  """Appends to `out` the fid line of every array in `sample_paths` and the floor line of
  every sample count that are not there yet; returns the new lines.

  `make_extractor_fn()` (the feature function) and `load_train_fn()` (the reference's train
  split, uint8 NHWC: an array or SourceImages) are only called when something is left to
  compute; `data_digest` identifies the files that split is read from (`reference_data`). A
  samples file that records other data than this reference is refused first
  (`check_samples_data`; `listing`: own_images_listing of --data_path; `image_key`: a tfds
  set's image feature), then images whose height is not `image_size` (if set).
  """
  tag = {"reference": reference, "reference_data": data_digest}
  tag |= {"reference_num": reference_num, "binarize": binarize}
  tag |= {"image_size": image_size} if image_size else {}  # (lines of native size: as before)
  tag |= {"image_key": image_key} if image_key != "image" else {}
  done = {record_id(r): r for r in report.read_records(out)}
  todo, counts, skipped = [], set(), 0  # todo: (record without fid, images)
  for path in sample_paths:
    arrays, record = read_samples(path)
    if written_by_write_samples(arrays):
      raise ValueError(
        f"{path} is the samples.npz of a run or of `python -m infonoise_jax.sample`, not a "
        "compare_schedules --save_samples file (arrays '<arm>__seed<k>__step<N>'): score a "
        "run's model with `python -m infonoise_jax.evaluate --workdir=<the run>`, which draws "
        "the samples and takes the reference (data, image size, binarization) from the run"
      )
    check_samples_data(
      path, record, reference, data_digest, binarize, listing, log, image_size, image_key
    )
    bad = [k for k in arrays if not KEY_RE.match(k)]
    if bad:
      raise ValueError(f"{path}: array names {bad} are not '<arm>__seed<k>__step<N>'")
    for key, x in arrays.items():
      if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
          f"{path}:{key}: expected uint8 images (N, H, W, 1 or 3) as images.to_uint8 writes, "
          f"got {x.dtype} {x.shape}"
        )
      if image_size and x.shape[1] != image_size:
        raise ValueError(
          f"{path}:{key}: images of height {x.shape[1]}, but --image_size={image_size}: give "
          f"the run's data.image_size (--image_size={x.shape[1]} if it was set, else leave "
          "--image_size out)"
        )
      x = x[:num] if num else x
      if len(x) < 2:
        raise ValueError(f"{path}:{key}: FID needs at least 2 samples, got {len(x)}")
      if num and len(x) < num:
        log(f"{path}:{key}: only {len(x)} samples (< --num={num}); scoring all of them")
      arm, seed, step = parse_key(key)
      rec = {"kind": "fid", "samples": os.path.basename(path), "key": key, "arm": arm}
      rec |= {"seed": seed, "step": step, "num": len(x), **tag, "sha256": content_hash(x)}
      old = done.get(record_id(rec))
      if old is not None and old.get("sha256") != rec["sha256"]:
        raise ValueError(
          f"{path}:{key}: {out} already holds the FID of an array of this name and count but "
          "with other content; give another --out"
        )
      counts.add(len(x))
      if old is None:
        todo.append((rec, x))
      else:
        skipped += 1
  todo.sort(key=lambda job: scoring_order(job[0]))
  floors = [floor_record(n, tag) for n in sorted(counts)]
  floors = [r for r in floors if record_id(r) not in done]
  if not todo and not floors:
    log(f"nothing to do: all {skipped} arrays and their floors are already in {out}")
    return []
  log(f"to compute: {len(todo)} arrays, {len(floors)} floors ({skipped} arrays already in {out})")

  train_u8 = load_train_fn()
  if not 2 <= reference_num < len(train_u8):
    raise ValueError(f"--reference_num must be in [2, {len(train_u8)}), got {reference_num}")
  ref_idx, rest_idx = split_indices(len(train_u8), reference_num)
  if floors and floors[-1]["num"] > len(rest_idx):
    raise ValueError(
      f"the floor of {floors[-1]['num']} samples needs as many train images outside the "
      f"reference subset; there are {len(rest_idx)}: lower --reference_num or --num"
    )
  for rec, x in todo:
    if x.shape[1:] != train_u8.shape[1:]:
      raise ValueError(
        f"{rec['samples']}:{rec['key']}: images of shape {x.shape[1:]}, reference images "
        f"{train_u8.shape[1:]}; a run trained with data.image_size set is scored with "
        f"--image_size=<it> (here --image_size={x.shape[1]}?)"
      )

  extractor = TimedExtractor(make_extractor_fn())
  cache_dir = os.path.dirname(os.path.abspath(out))
  name = f"fid_ref_{reference}_{data_digest}_train_{reference_num}"
  name += f"_size{image_size}" if image_size else ""
  name += f"_{image_key}" if image_key != "image" else ""
  name += "_binarized" if binarize else ""
  where = fid.reference_stats_path(cache_dir, name)
  cached = os.path.exists(where)
  log(f"reference statistics {where}: " + ("cached" if cached else f"{reference_num} images"))
  ref_images = train_u8[np.sort(ref_idx)]
  ref_batches = lambda: batches(ref_images, batch_size, "reference", log)
  ref = fid.reference_stats(name, ref_batches, extractor, cache_dir)

  new = []
  jobs = [(r, train_u8[rest_idx[: r["num"]]]) for r in floors] + todo
  for rec, x in jobs:
    t0 = time.perf_counter()
    images = batches(x, batch_size, rec["key"], log)
    stats, *halves = fid.compute_stats_and_halves(images, extractor, len(x))
    rec = {**rec, "fid": fid.frechet_distance(stats, ref)}
    if halves[0] is not None:  # the draw noise of this set (docs/fid.md)
      rec["fid_halves"] = [fid.frechet_distance(h, ref) for h in halves]
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    report.append_record(out, rec)
    log(json.dumps(rec))
    new.append(rec)
  if extractor.rate() is not None:
    log(
      f"Feature-extractor rate: {extractor.rate():.2f} images/s "
      f"({extractor.images} images in {extractor.seconds:.1f} s, first call excluded; "
      f"batch {batch_size}, {jax.device_count()} {jax.default_backend()} device(s))"
    )
  return new


def parse(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--samples", required=True, help="comma list of .npz files of uint8 arrays")
  p.add_argument("--out", required=True, help="JSON lines file, appended to")
  p.add_argument(
    "--reference",
    default="fashion",
    help="fashion (Fashion-MNIST's IDX files), images (your own, --data_path) or tfds:<name> (a "
    "prepared tfds image set)",
  )
  p.add_argument("--reference_num", type=int, default=10000, help="reference subset size")
  p.add_argument("--binarize", action="store_true", help="binarized reference (data.binarize)")
  p.add_argument("--num", type=int, default=0, help="first num samples of each array; 0 = all")
  p.add_argument("--batch_size", type=int, default=50, help="images per Inception call")
  p.add_argument("--weights", default=inception.DEFAULT_WEIGHTS_PATH, help="converted .npz")
  p.add_argument(
    "--data_dir",
    default="",
    help="fashion: the IDX files' folder, '' = config data.local_dir; tfds:<name>: the tfds "
    "data_dir (the run's data.tfds_data_dir), '' = tfds's default",
  )
  p.add_argument("--image_key", default="image", help="tfds:<name>: the image feature")
  p.add_argument(
    "--data_path", default="", help="--reference=images: your .npy / .npz or folder of images"
  )
  p.add_argument(
    "--image_size",
    type=int,
    default=0,
    help="the run's data.image_size: the reference resized as the trainer's loader does; 0 = "
    "native size",
  )
  args = p.parse_args(argv)
  if args.reference not in REFERENCES and not is_tfds(args.reference):
    p.error(
      f"--reference={args.reference}: give fashion, images (with --data_path) or "
      "tfds:<name> for a tfds image set (e.g. tfds:cifar10)"
    )
  if args.image_key != "image" and not is_tfds(args.reference):
    p.error("--image_key names a tfds set's image feature: it needs --reference=tfds:<name>")
  if (args.reference == OWN_IMAGES) != bool(args.data_path):
    p.error(
      "--reference=images scores against your own images at --data_path (the trainer's "
      "data.path), and --data_path needs --reference=images; the default reference is Fashion-MNIST"
    )
  if args.data_path and not os.path.exists(os.path.expanduser(args.data_path)):
    p.error(f"--data_path={args.data_path} does not exist")
  if args.num < 0 or args.batch_size < 1 or args.image_size < 0:
    p.error("--num and --image_size must be >= 0 and --batch_size >= 1")
  given = [s for s in args.samples.split(",") if s]
  missing = [s for s in given if not os.path.isfile(s)]
  if not given or missing:
    p.error(f"--samples: no such file {', '.join(missing) or '(none given)'}")
  other = [s for s in given if not s.endswith(".npz")]
  if other:
    p.error(
      f"--samples: {', '.join(other)} is not an .npz of samples (compare_schedules.py "
      "--save_samples writes final_<data>_<arm>.npz; the trainer's samples.npz)"
    )
  return args


def main(argv=None) -> list[dict]:
  args = parse(argv)
  paths = [s for s in args.samples.split(",") if s]
  config = load_config_file(str(DEFAULT_CONFIG_PATH))
  configure_compilation_cache(config.system)
  identity = reference_identity(args.reference, args.data_dir, args.data_path, args.image_key)
  return score(
    paths,
    args.out,
    lambda: make_extractor(args.weights, args.batch_size),
    lambda: train_images(
      reference_config(
        args.reference,
        args.binarize,
        args.data_dir,
        args.data_path,
        args.image_size,
        args.image_key,
      )
    ),
    identity["reference_data"],
    reference=args.reference,
    reference_num=args.reference_num,
    binarize=args.binarize,
    num=args.num,
    batch_size=args.batch_size,
    listing=identity.get("listing", ""),
    image_size=args.image_size,
    image_key=args.image_key,
  )


if __name__ == "__main__":
  from infonoise_jax import cli

  cli.run_command(main)  # a user error is one `error:` line (INFONOISE_DEBUG=1: the traceback)
