"""Floats in a value range -> uint8 images: one rule for PNG grids, sample files and FID.

EDM's quantization (its `generate.py`): x in [-1, 1] -> clip(x * 127.5 + 128, 0, 255),
truncated; a range [lo, hi] is first mapped onto [-1, 1]. NaN maps to the middle grey.
"""

import numpy as np


def to_uint8(x: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
  """uint8 of floats in `value_range` (EDM's quantization); uint8 input passes through."""
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return x
  lo, hi = value_range
  x = np.nan_to_num(x.astype(np.float32))
  if (lo, hi) != (-1.0, 1.0):
    x = (x - np.float32((lo + hi) / 2)) / np.float32((hi - lo) / 2)
  return np.clip(x * 127.5 + 128.0, 0, 255).astype(np.uint8)


def from_uint8(u: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
  """float32 of `to_uint8` images: each level at the centre of the floats that map to it
  (within half a level of them; 0 and 255 land on the ends of `value_range`)."""
  lo, hi = value_range
  x = (np.asarray(u, np.float32) - np.float32(127.5)) / np.float32(127.5)
  return x * np.float32((hi - lo) / 2) + np.float32((lo + hi) / 2)
