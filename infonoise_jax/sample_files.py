"""The samples file format shared by the trainer's final samples and the sample command.

`<out>/samples.npz`: `samples` (float32 model output divided by data.scale, so the data range
is [-1, 1]), `uint8` (EDM's quantization of it, `images.to_uint8`), `data_scale` and the
sampling settings; for images also `<out>/samples.png`, a grid of the first (up to) 64.
"""

import io
import os

import numpy as np

from infonoise_jax.data.tokens import TokenEncoding
from infonoise_jax.evaluation import images, plots
from infonoise_jax.paths import run_path

GRID_IMAGES = 64  # images in samples.png


def write_samples(out: str, samples: np.ndarray, scale: float, is_image: bool, **meta) -> dict:
  """Writes samples.npz and (images) samples.png into `out`; returns their paths."""
  folder = run_path(out)
  folder.mkdir(parents=True, exist_ok=True)
  x = (np.asarray(samples, np.float32) / np.float32(scale)).astype(np.float32)
  written = {"npz": str(folder / "samples.npz")}
  buf = io.BytesIO()  # written in one piece, so remote (gs://) outputs work too
  np.savez(buf, samples=x, uint8=images.to_uint8(x), data_scale=scale, **meta)
  (folder / "samples.npz").write_bytes(buf.getvalue())
  if is_image:
    written["png"] = str(folder / "samples.png")
    plots.save_png(written["png"], plots.sample_grid(x[:GRID_IMAGES]))
  return written


def write_texts(out: str, vocab: str, tokens_NL: np.ndarray) -> str:
  """samples.txt: each decoded sample, separated by a line of dashes."""
  path = os.path.join(out, "samples.txt")
  enc = TokenEncoding(vocab)
  with open(path, "w") as f:
    f.write("\n-----\n".join(enc.to_text(ids) for ids in tokens_NL) + "\n")
  return path
