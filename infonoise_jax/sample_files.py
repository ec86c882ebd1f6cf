"""The samples file format shared by the trainer's final samples and the sample command.

`<out>/samples.npz`: `samples` (float32 model output divided by data.scale, so the data range
is [-1, 1]), `data_scale` and the sampling settings; for images also `uint8` (EDM's
quantization, `images.to_uint8`), the data record `__data__` (`data_record`, as the harness's
saved samples have it) and `<out>/samples.png`, a grid of the first (up to) 64; for
token data `tokens` and `vocab` (passed as meta) and the decoded samples (`write_texts`):
`<out>/samples.txt` for text, `<out>/samples.fa` (FASTA) for DNA.
"""

import io
import json
import zipfile

import numpy as np
from absl import logging

from infonoise_jax.data.sources import SAMPLES_DATA_KEY, data_identity
from infonoise_jax.data.tokens import TokenEncoding
from infonoise_jax.evaluation import images, plots
from infonoise_jax.paths import run_path

GRID_IMAGES = 64  # images in samples.png


def data_record(data_config) -> dict:
  """{SAMPLES_DATA_KEY: the data's identity as JSON} for samples.npz: the record the harness's
  saved samples carry, by which experiments/fid_of_samples.py checks the reference it scores
  them against (data, binarized, image size, the files' digest). {} when the data cannot be
  identified here (a remote folder unreachable now): the samples are still written."""
  try:
    return {SAMPLES_DATA_KEY: json.dumps(data_identity(data_config))}
  except (OSError, ValueError) as e:
    logging.warning("samples.npz without the data record (%s): %s", SAMPLES_DATA_KEY, e)
    return {}


def write_samples(out: str, samples: np.ndarray, scale: float, is_image: bool, **meta) -> dict:
  """Writes samples.npz and (images) samples.png into `out`; returns their paths."""
  folder = run_path(out)
  folder.mkdir(parents=True, exist_ok=True)
  x = (np.asarray(samples, np.float32) / np.float32(scale)).astype(np.float32)
  written = {"npz": str(folder / "samples.npz")}
  if is_image:
    written["png"] = str(folder / "samples.png")
    plots.save_png(written["png"], plots.sample_grid(x[:GRID_IMAGES]))
  buf = io.BytesIO()  # written in one piece, so remote (gs://) outputs work too
  quantized = {"uint8": images.to_uint8(x)} if is_image else {}
  np.savez(buf, samples=x, data_scale=scale, **quantized, **meta)
  (folder / "samples.npz").write_bytes(buf.getvalue())  # last: its presence means all written
  return written


def written_by_write_samples(names) -> bool:
  """Whether an .npz's array `names` are `write_samples`' format (a run's or the sample
  command's samples.npz), e.g. to refuse it where another format is read."""
  return {"samples", "data_scale"} <= set(names)


def samples_step(out: str) -> int | None:
  """The `step` recorded in `out`'s samples.npz (written last of a run's final outputs), or
  None if there is none or it cannot be read (a run killed while writing it leaves it cut
  short: not a zip file)."""
  path = run_path(out) / "samples.npz"
  try:
    with np.load(io.BytesIO(path.read_bytes())) as z:
      return int(z["step"]) if "step" in z.files else None
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    return None


FASTA_WIDTH = 80  # bases per line of samples.fa


TEXT_HEADER = "===== sample {j}{tags} ====="  # the line before text sample j in samples.txt


def read_texts(path: str) -> list[tuple[str, str]]:
  """(header, text) per sample of a samples.txt that `write_texts` wrote. Sample j begins
  after the line TEXT_HEADER gives for j, with the file's own tags (so a sample holding a line
  of dashes, or a header of another index or run, is still read whole); the file's last
  newline is not part of the text."""
  body = run_path(path).read_text()
  first = body.split("\n", 1)[0]
  tags = first[len("===== sample 0") : -len(" =====")]
  out, j, rest = [], 0, body
  header = TEXT_HEADER.format(j=0, tags=tags)
  if not rest.startswith(header + "\n"):
    raise ValueError(f"{path} does not start with a sample header ({header!r})")
  rest = rest[len(header) + 1 :]
  while True:
    following = "\n" + TEXT_HEADER.format(j=j + 1, tags=tags) + "\n"
    cut = rest.find(following)
    if cut < 0:
      out.append((header, rest[:-1] if rest.endswith("\n") else rest))
      return out
    out.append((header, rest[:cut]))
    j, header, rest = j + 1, following.strip("\n"), rest[cut + len(following) :]


def write_texts(out: str, vocab: str, tokens_NL: np.ndarray, fasta: bool = False, **meta) -> str:
  """The decoded samples. Text: samples.txt, each sample after a line `===== sample <j>
  seed=.. step=.. =====` (TEXT_HEADER; `read_texts` reads them back, even when a sample holds
  such a line). DNA
  (`fasta`): samples.fa, one record per sample, `>sample_<j>` followed by `meta` as key=value
  (seed, step), its bases wrapped at FASTA_WIDTH, so that sequence tools (and this project's
  DNA reader) read the samples as they read the training data."""
  enc = TokenEncoding(vocab)
  texts = [enc.to_text(ids) for ids in tokens_NL]
  if fasta:
    path = run_path(out) / "samples.fa"  # local or remote (gs://), like samples.npz
    tags = "".join(f" {k}={v}" for k, v in meta.items())
    records = []
    for j, t in enumerate(texts):
      lines = [t[i : i + FASTA_WIDTH] for i in range(0, len(t), FASTA_WIDTH)]
      records.append("\n".join([f">sample_{j}{tags}", *lines]))
    path.write_text("\n".join(records) + "\n")
  else:
    path = run_path(out) / "samples.txt"
    tags = "".join(f" {k}={v}" for k, v in meta.items())
    blocks = [TEXT_HEADER.format(j=j, tags=tags) + "\n" + t for j, t in enumerate(texts)]
    path.write_text("\n".join(blocks) + "\n")
  return str(path)
