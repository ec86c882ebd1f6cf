"""Tokens as continuous vectors: the one encoding every token source (DNA, text) uses.

A window of L tokens over a vocabulary of V symbols becomes an (L, V) float32 array. Token k
at a position is the *centred, scaled one-hot* vector

    x = a (e_k - 1/V),        a = data.scale,

so the diffusion runs on continuous vectors with the usual x-space squared error (I-MMSE and
the InfoNoise estimator stay valid, docs/method.md sections 3-4) and decoding is the argmax
over the last axis. Centring (subtracting a/V from every entry) is a constant shift: it changes
neither distances between codewords nor the mmse, and it makes the data mean zero, which EDM's
preconditioning assumes.

Per dimension, under uniform tokens, an entry is a(1 - 1/V) with probability 1/V and -a/V
otherwise, so its mean is 0 and its standard deviation is

    sigma_data = a sqrt(V - 1) / V        (V = 4, a = 1: 0.433; V = 65, a = 1: 0.123).

`edm.sigma_data = 0` in a config means exactly this value (train.py resolves it from the
source's encoding before anything is built). With non-uniform token frequencies the per-dim
std differs slightly; the formula is the reference value, stated once here.

Two codewords are a sqrt(2) apart, so the per-position posterior resolves near sigma ~ a/2
and the information profile of one-hot data peaks far above that of natural images
(`profiles.onehot_mmse` is its closed form for independent positions).
"""

import dataclasses

import numpy as np


def onehot_std(vocab_size: int, scale: float) -> float:
  """Per-dim std of the encoding of V symbols under uniform tokens: a sqrt(V - 1) / V."""
  if vocab_size < 2:
    raise ValueError(f"a token encoding needs at least 2 symbols, got {vocab_size}")
  return float(scale * np.sqrt(vocab_size - 1) / vocab_size)


@dataclasses.dataclass(frozen=True)
class TokenEncoding:
  """Vocabulary (one character per token id, in id order) and the one-hot scale a."""

  vocab: str
  scale: float = 1.0

  def __post_init__(self):
    if not self.vocab:
      raise ValueError("empty vocabulary: a token encoding needs at least 2 symbols")
    if len(set(self.vocab)) != len(self.vocab):
      raise ValueError(f"vocabulary {self.vocab!r} repeats a symbol")
    if self.scale <= 0:
      raise ValueError(f"one-hot scale (data.scale) must be > 0, got {self.scale}")

  @property
  def size(self) -> int:
    """V, the number of symbols."""
    return len(self.vocab)

  @property
  def sigma_data(self) -> float:
    """Per-dim std of the encoding under uniform tokens: a sqrt(V - 1) / V."""
    return onehot_std(self.size, self.scale)

  def codewords(self) -> np.ndarray:
    """(V, V) float32: row k is the encoding of token k, a (e_k - 1/V)."""
    v = self.size
    return (np.float32(self.scale) * (np.eye(v) - 1.0 / v)).astype(np.float32)

  def encode(self, ids_NL: np.ndarray) -> np.ndarray:
    """Token ids (..., L) -> (..., L, V) float32 encodings."""
    ids = np.asarray(ids_NL)
    if ids.size and (ids.min() < 0 or ids.max() >= self.size):
      raise ValueError(f"token ids must lie in [0, {self.size}), got {ids.min()}..{ids.max()}")
    # The two values of codewords(), written into a (..., L, V) array: indexing the V x V
    # table built it for every batch (8 s and 4 GB per batch at V = 16,000 characters).
    v, a = self.size, np.float64(np.float32(self.scale))
    out = np.full((*ids.shape, v), np.float32(a * (0.0 - 1.0 / v)), np.float32)
    on = np.float32(a * (1.0 - 1.0 / v))
    np.put_along_axis(out, ids[..., None].astype(np.intp), on, axis=-1)
    return out

  def decode(self, x_NLV) -> np.ndarray:
    """(..., L, V) vectors -> (..., L) int32 token ids by argmax (ties: the lowest id)."""
    return np.argmax(np.asarray(x_NLV), axis=-1).astype(np.int32)

  def to_ids(self, text: str) -> np.ndarray:
    """A string of vocabulary symbols -> int32 ids; KeyError names an unknown symbol."""
    index = {c: i for i, c in enumerate(self.vocab)}
    return np.array([index[c] for c in text], np.int32)

  def to_text(self, ids_L: np.ndarray) -> str:
    """Token ids -> the string of their symbols."""
    return "".join(self.vocab[i] for i in np.asarray(ids_L).reshape(-1))
