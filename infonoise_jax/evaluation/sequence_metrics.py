"""Domain metrics for token data: plain functions (token ids in, dict of floats out).

Inputs are int token ids of shape (N, L) (decoded samples, `TokenEncoding.decode`) and
held-out windows of the same shape; compare every schedule with the same number of samples
and held-out windows (train.eval_num_samples), since every metric here is biased upwards at
small N.

  kmer_js_k     (dna, k in seq_metrics.kmer_sizes)  Jensen-Shannon divergence, in bits
                (in [0, 1]), between the k-mer spectra (counts of the k-mers inside windows).
  ngram_js_n    (text, n in seq_metrics.ngram_sizes) the same for character n-grams.
  gc_w1         (dna, nucleotide vocabularies only: `is_nucleotide_vocab`) 1-D Wasserstein
                distance between the per-window GC-fraction distributions; `gc_mean_diff` the
                difference of their means. Left out for other alphabets (protein's G and C
                are glycine and cysteine).
  frechet       (dna) Frechet distance between Gaussian fits of the features of a small CNN
                trained once on real versus corrupted windows (`sequence_classifier.py`).
  nll_per_char  (text) mean negative log-likelihood in nats per character of the samples
                under an interpolated (Witten-Bell) n-gram model fitted on the training split.

Floors: each metric's value for two disjoint halves of held-out real data (`split_halves`);
the tests pin floors and separations on the real data (tests/sequence_metrics_test.py).
Counting runs in NumPy on int64 n-gram codes (a few ms for thousands of windows); the
classifier's features are computed on device.
"""

from collections.abc import Sequence

import numpy as np

from infonoise_jax.data import sequences
from infonoise_jax.evaluation import fid


def largest_ngram(vocab_size: int) -> int:
  """The largest n whose n-gram codes V^n fit `ngram_codes`'s int64 (V^n < 2^62)."""
  n = 1
  while float(vocab_size) ** (n + 1) < 2.0**62:
    n += 1
  return n


def ngram_codes(ids_NL: np.ndarray, n: int, vocab_size: int) -> np.ndarray:
  """(N, L-n+1) int64 codes sum_j id_{t+j} V^(n-1-j) of the n-grams inside each window."""
  ids = np.asarray(ids_NL, np.int64)
  if n < 1 or n > ids.shape[1]:
    raise ValueError(f"n-gram size {n} must be in [1, window length {ids.shape[1]}]")
  if n > largest_ngram(vocab_size):
    raise ValueError(f"{n}-grams over {vocab_size} symbols overflow int64 codes")
  codes = np.zeros((ids.shape[0], ids.shape[1] - n + 1), np.int64)
  for j in range(n):
    codes = codes * vocab_size + ids[:, j : ids.shape[1] - n + 1 + j]
  return codes


def ngram_counts(ids_NL: np.ndarray, n: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(sorted unique n-gram codes, their counts)."""
  return np.unique(ngram_codes(ids_NL, n, vocab_size), return_counts=True)


def js_divergence(p: tuple[np.ndarray, np.ndarray], q: tuple[np.ndarray, np.ndarray]) -> float:
  """Jensen-Shannon divergence in bits between two count tables (codes, counts), in [0, 1]:
  rounding took disjoint tables to 1.0000000000000002 bits, above the metric's bound."""
  codes = np.union1d(p[0], q[0])
  p_S = np.zeros(len(codes))
  q_S = np.zeros(len(codes))
  p_S[np.searchsorted(codes, p[0])] = p[1]
  q_S[np.searchsorted(codes, q[0])] = q[1]
  p_S, q_S = p_S / p_S.sum(), q_S / q_S.sum()
  m_S = 0.5 * (p_S + q_S)

  def kl(a_S):
    nz = a_S > 0
    return float(np.sum(a_S[nz] * np.log2(a_S[nz] / m_S[nz])))

  return min(max(0.5 * kl(p_S) + 0.5 * kl(q_S), 0.0), 1.0)


def ngram_js(a_NL: np.ndarray, b_NL: np.ndarray, n: int, vocab_size: int) -> float:
  return js_divergence(ngram_counts(a_NL, n, vocab_size), ngram_counts(b_NL, n, vocab_size))


def is_nucleotide_vocab(vocab: str) -> bool:
  """Whether GC content means anything for `vocab`: it holds G and C and only nucleotide
  letters (ACGTU, IUPAC ambiguity codes, masks and gaps: ACGT, ACGU, ACGTN, ...). A protein
  alphabet (E, F, I, L, P, Q are no nucleotide codes) or any other is not."""
  return {"G", "C"} <= set(vocab) <= set("ACGTU" + sequences.NUCLEOTIDE_EXTRAS)


def gc_fraction(ids_NL: np.ndarray, vocab: str) -> np.ndarray:
  """(N,) fraction of G or C letters per window."""
  gc = [i for i, c in enumerate(vocab) if c in "GCgc"]
  if not gc:
    raise ValueError(f"GC content needs G or C in the vocabulary, got {vocab!r}")
  return np.isin(np.asarray(ids_NL), gc).mean(axis=1)


def wasserstein_1d(a_N: np.ndarray, b_M: np.ndarray) -> float:
  """W1 between two empirical 1-D distributions (integral of |F_a - F_b|)."""
  a_N, b_M = np.sort(np.asarray(a_N, np.float64)), np.sort(np.asarray(b_M, np.float64))
  grid = np.concatenate([a_N, b_M])
  grid.sort()
  fa = np.searchsorted(a_N, grid[:-1], side="right") / len(a_N)
  fb = np.searchsorted(b_M, grid[:-1], side="right") / len(b_M)
  return float(np.sum(np.abs(fa - fb) * np.diff(grid)))


class NgramLM:
  """Interpolated Witten-Bell character n-gram model (a proper distribution for any context).

  P_1(c) = (C(c) + 1) / (N + V);  for j = 2..order, with h the j-1 previous symbols,
  P_j(c|h) = (C(hc) + T(h) P_{j-1}(c|h')) / (C(h) + T(h)) where C(h) = sum_c C(hc) and T(h)
  the number of distinct c seen after h; P_j = P_{j-1} when h was never seen. Positions near
  a window start use the longest context available there. Counts stay inside windows, so
  windows shorter than `order` give a model of their length's order.
  """

  def __init__(self, train_NL: np.ndarray, order: int, vocab_size: int):
    if order < 1:
      raise ValueError(f"seq_metrics.lm_order must be >= 1, got {order}")
    self.order, self.vocab_size = order, vocab_size
    self.tables = []  # per j: (codes, C(hc)), (contexts, C(h), T(h))
    for j in range(1, min(order, np.shape(train_NL)[1]) + 1):
      codes, counts = ngram_counts(train_NL, j, vocab_size)
      ctx, inverse = np.unique(codes // vocab_size, return_inverse=True)
      c_h = np.bincount(inverse, weights=counts)
      t_h = np.bincount(inverse)
      self.tables.append(((codes, counts), (ctx, c_h, t_h)))

  @staticmethod
  def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    idx = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[idx] == query, values[idx], 0).astype(np.float64)

  def log_probs(self, ids_NL: np.ndarray) -> np.ndarray:
    """(N, L) natural-log probability of each token given its in-window context."""
    ids = np.asarray(ids_NL, np.int64)
    v = self.vocab_size
    (codes1, counts1), _ = self.tables[0]
    p = (self._lookup(codes1, counts1, ids) + 1.0) / (counts1.sum() + v)
    for j in range(2, min(len(self.tables), ids.shape[1]) + 1):
      (codes, counts), (ctx, c_h, t_h) = self.tables[j - 1]
      code_NT = ngram_codes(ids, j, v)  # n-grams ending at positions j-1 .. L-1
      c_hc = self._lookup(codes, counts, code_NT)
      ch, th = self._lookup(ctx, c_h, code_NT // v), self._lookup(ctx, t_h, code_NT // v)
      lower = p[:, j - 1 :]
      p_j = np.where(ch > 0, (c_hc + th * lower) / np.maximum(ch + th, 1.0), lower)
      p = np.concatenate([p[:, : j - 1], p_j], axis=1)
    return np.log(p)

  def nll_per_char(self, ids_NL: np.ndarray) -> float:
    return float(-self.log_probs(ids_NL).mean())


def split_halves(ids_NL: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Two disjoint random halves of a set of windows (for the metrics' floors)."""
  perm = np.random.default_rng(seed % 2**64).permutation(len(ids_NL))
  half = len(ids_NL) // 2
  return ids_NL[perm[:half]], ids_NL[perm[half : 2 * half]]


def dna_metrics(
  samples_NL: np.ndarray,
  ref_NL: np.ndarray,
  vocab: str,
  kmer_sizes: Sequence[int] = (3, 4, 5, 6),
  features=None,
) -> dict[str, float]:
  """k-mer JS divergences, GC distances (nucleotide vocabularies only: `is_nucleotide_vocab`)
  and (with `features`: ids -> (N, D)) Frechet."""
  out = {f"kmer_js_{k}": ngram_js(samples_NL, ref_NL, k, len(vocab)) for k in kmer_sizes}
  if is_nucleotide_vocab(vocab):
    gc_s, gc_r = gc_fraction(samples_NL, vocab), gc_fraction(ref_NL, vocab)
    out["gc_w1"] = wasserstein_1d(gc_s, gc_r)
    out["gc_mean_diff"] = float(gc_s.mean() - gc_r.mean())
  if features is not None:
    stats = [
      fid.stats_of_features(np.asarray(features(x), np.float64)) for x in (samples_NL, ref_NL)
    ]
    out["frechet"] = fid.frechet_distance(*stats)
  return out


def text_metrics(
  samples_NL: np.ndarray,
  ref_NL: np.ndarray,
  vocab_size: int,
  ngram_sizes: Sequence[int] = (1, 2, 3, 4),
  lm: NgramLM | None = None,
) -> dict[str, float]:
  """Character n-gram JS divergences and (with `lm`) the samples' NLL per character."""
  out = {f"ngram_js_{n}": ngram_js(samples_NL, ref_NL, n, vocab_size) for n in ngram_sizes}
  if lm is not None:
    out["nll_per_char"] = lm.nll_per_char(samples_NL)
  return out
