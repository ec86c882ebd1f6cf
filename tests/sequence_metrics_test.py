"""Domain metrics: closed-form checks, and floors / separations on the real held-out data.

Floor: the metric between two disjoint halves of 512 held-out windows each (the same budget
the comparison uses per side). Separation: the same reference half against shuffled windows
(symbols permuted within each window: unigram and GC content kept, order destroyed) and
uniformly random windows. Tolerances are stated per assertion.
"""

import numpy as np
import pytest

from configs import default
from infonoise_jax.data import load_source
from infonoise_jax.evaluation import sequence_metrics as sm
from infonoise_jax.evaluation.sequence_classifier import FeatureClassifier

HALF = 512


def _sources(name: str):
  c = default.get_config()
  c.data.name, c.data.seq_len = name, (128 if name == "dna" else 64)
  train = load_source(c)
  c.data.split = "test"
  return train, load_source(c)


def _cases(held_out_NL: np.ndarray, vocab_size: int):
  rng = np.random.default_rng(0)
  pick = held_out_NL[rng.permutation(len(held_out_NL))[: 2 * HALF]]
  ref, other = sm.split_halves(pick, seed=1)
  shuffled = np.take_along_axis(other, np.argsort(rng.random(other.shape), axis=1), axis=1)
  random = rng.integers(0, vocab_size, other.shape)
  return ref, {"floor": other, "shuffled": shuffled, "random": random}


# ------------------------------------------------------------------------------ closed forms
def test_js_divergence_bounds_and_w1_shift():
  a = (np.array([0, 1, 2]), np.array([5, 3, 2]))
  assert sm.js_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
  assert sm.js_divergence(a, (np.array([7, 8]), np.array([1, 1]))) == pytest.approx(1.0)
  # two-point case: P = (1, 0), Q = (1/2, 1/2): JS = 1.5 - 0.5 log2 3 - ... (direct formula)
  p, q = np.array([1.0, 0.0]), np.array([0.5, 0.5])
  m = (p + q) / 2
  expected = 0.5 * np.sum(p[:1] * np.log2(p[:1] / m[:1])) + 0.5 * np.sum(q * np.log2(q / m))
  got = sm.js_divergence((np.array([0]), np.array([4])), (np.array([0, 1]), np.array([2, 2])))
  assert got == pytest.approx(expected)
  x = np.random.default_rng(0).random(1000)
  assert sm.wasserstein_1d(x, x + 0.3) == pytest.approx(0.3)


def test_ngram_lm_is_a_proper_distribution_and_counts_stay_in_windows():
  rng = np.random.default_rng(0)
  train = rng.integers(0, 5, (200, 12))
  train[:, 1::2] = (train[:, 0::2] + 1) % 5  # order-2 structure
  lm = sm.NgramLM(train, 3, 5)
  ctx = rng.integers(0, 5, (7, 11))
  for pos in (0, 1, 5, 11):  # short and full contexts
    total = sum(
      np.exp(lm.log_probs(np.concatenate([ctx[:, :pos], np.full((7, 1), s)], axis=1))[:, -1])
      for s in range(5)
    )
    np.testing.assert_allclose(total, 1.0, rtol=1e-9)
  structured = train[:50].copy()
  assert lm.nll_per_char(structured) < lm.nll_per_char(rng.integers(0, 5, (50, 12))) - 0.3
  codes = sm.ngram_codes(np.array([[1, 2, 3]]), 2, 10)
  np.testing.assert_array_equal(codes, [[12, 23]])
  # an order past the window (seq_metrics.lm_order=4 at data.seq_len=3) is the window's order
  short = train[:, :3]
  np.testing.assert_array_equal(
    sm.NgramLM(short, 4, 5).log_probs(ctx[:, :3]), sm.NgramLM(short, 3, 5).log_probs(ctx[:, :3])
  )


# ------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def dna():
  train, test = _sources("dna")
  return train, *_cases(test.token_ids, 4)


def test_dna_kmer_and_gc_floors_and_separations(dna):
  _, ref, cases = dna
  m = {k: sm.dna_metrics(x, ref, "ACGT") for k, x in cases.items()}
  floor = m["floor"]
  assert floor["kmer_js_3"] < 0.003 and floor["kmer_js_6"] < 0.06  # sampling noise at N = 512
  assert floor["gc_w1"] < 0.01
  for k in (3, 4, 5, 6):
    key = f"kmer_js_{k}"
    assert m["shuffled"][key] > 1.8 * floor[key] and m["random"][key] > 3 * floor[key], key
  assert m["shuffled"]["kmer_js_3"] > 0.003  # shuffling kills codon / k-mer structure
  assert m["shuffled"]["gc_w1"] < 0.01  # shuffling keeps each window's GC content ...
  assert m["random"]["gc_w1"] > 0.05  # ... uniform letters do not (kaptive GC ~ 0.4-0.55)


def test_dna_frechet_floor_separation_and_cache(dna, tmp_path):
  train, ref, cases = dna
  clf = FeatureClassifier(train.token_ids, "ACGT", 16, 150, str(tmp_path))
  fr = {k: sm.dna_metrics(x, ref, "ACGT", (3,), clf.features)["frechet"] for k, x in cases.items()}
  assert fr["shuffled"] > 5 * fr["floor"] and fr["random"] > 10 * fr["floor"]
  again = FeatureClassifier(train.token_ids, "ACGT", 16, 150, str(tmp_path))  # from the cache
  np.testing.assert_array_equal(again.features(ref[:8]), clf.features(ref[:8]))
  other = FeatureClassifier(train.token_ids[:1000], "ACGT", 16, 1, str(tmp_path))
  assert other.path != clf.path  # other training windows: another cache entry


def test_text_ngram_and_nll_floors_and_separations():
  train, test = _sources("text")
  v = train.encoding.size
  ref, cases = _cases(test.token_ids, v)
  lm = sm.NgramLM(train.token_ids, 4, v)
  m = {k: sm.text_metrics(x, ref, v, (1, 2, 3, 4), lm) for k, x in cases.items()}
  floor = m["floor"]
  assert floor["ngram_js_1"] < 0.005 and floor["ngram_js_2"] < 0.04
  assert m["shuffled"]["ngram_js_1"] < 0.005  # shuffling keeps letter frequencies ...
  for n in (2, 3, 4):  # ... not their order (n >= 2 separates)
    assert m["shuffled"][f"ngram_js_{n}"] > 1.5 * floor[f"ngram_js_{n}"] + 0.05
  assert m["random"]["ngram_js_1"] > 0.2
  # NLL per character (nats): held-out Shakespeare ~1.9-2.2 under a 4-gram model of the rest
  assert 1.5 < floor["nll_per_char"] < 2.5
  assert m["shuffled"]["nll_per_char"] > floor["nll_per_char"] + 2.0
  assert m["random"]["nll_per_char"] > np.log(v)  # worse than a uniform guess


def test_js_divergence_of_disjoint_tables_is_at_most_one_bit():
  """Disjoint n-gram tables (samples sharing no n-gram with the held-out windows) scored
  1.0000000000000002 bits by rounding, above the divergence's bound of 1."""
  rng = np.random.default_rng(0)
  for n, k in [(28, 27), *rng.integers(1, 40, (200, 2)).tolist()]:
    p = (np.arange(n), rng.integers(1, 50, n))
    q = (np.arange(n, n + k), rng.integers(1, 50, k))
    assert sm.js_divergence(p, q) <= 1.0


def test_gc_metrics_only_for_nucleotide_vocabularies():
  """A protein run (data.name=dna, data.vocab = the amino acids) reported gc_w1 and
  gc_mean_diff, counting glycine and cysteine as GC: they are left out of any vocabulary that
  is not nucleotide letters (ACGTU, ambiguity codes, masks and gaps) holding G and C."""
  rng = np.random.default_rng(0)
  for vocab, has_gc in [
    ("ACGT", True),
    ("ACGU", True),
    ("ACGTN-", True),
    ("ACDEFGHIKLMNPQRSTVWY", False),  # protein
    ("ATN", False),  # no G or C
  ]:
    a, b = rng.integers(0, len(vocab), (2, 20, 16))
    m = sm.dna_metrics(a, b, vocab, (1, 2))
    assert ({"gc_w1", "gc_mean_diff"} <= set(m)) == has_gc, vocab
    assert {"kmer_js_1", "kmer_js_2"} <= set(m), vocab


def test_a_negative_seed_draws_halves_as_its_value_modulo_2_64():
  """The trainer takes any 64-bit seed (jax.random.key(-1) works); numpy's RNG refused a
  negative one unnamed when a token run built its evaluation (review of 2026-12-07)."""
  ids_NL = np.arange(40).reshape(20, 2)
  a, b = sm.split_halves(ids_NL, seed=-1)
  want = sm.split_halves(ids_NL, seed=2**64 - 1)
  np.testing.assert_array_equal(a, want[0])
  np.testing.assert_array_equal(b, want[1])


@pytest.mark.parametrize("v", [2, 4, 27, 3000, 46340, 46341, 47000])
def test_largest_ngram_is_the_last_size_whose_codes_fit_int64(v):
  """A CJK text (47,000 symbols) failed with '4-grams ... overflow int64 codes', naming no key;
  the evaluator now names the keys and this size (2026-12-07 probe)."""
  n = sm.largest_ngram(v)
  assert v**n < 2**62 <= v ** (n + 1)  # exact integers: the bound is where the codes overflow
  ids = np.full((1, n + 1), v - 1)
  assert sm.ngram_codes(ids, n, v).max() == v**n - 1  # the largest code is exact
  with pytest.raises(ValueError, match="overflow int64"):
    sm.ngram_codes(ids, n + 1, v)


def test_too_few_held_out_windows_name_both_ways_to_more():
  """Held-out windows dropped for symbols the training split lacks left too few, and the error
  offered only a larger val_fraction (2026-12-07 probe): it names unknown_policy too."""
  import types

  from infonoise_jax.evaluation import sequence_eval

  config = default.get_config()
  config.data.name = "text"
  test = types.SimpleNamespace(token_ids=np.zeros((3, 8), np.int32))
  with pytest.raises(ValueError) as e:
    sequence_eval.held_out(config, 8, test)
  assert "exceeds the 3 held-out windows" in str(e.value)
  assert "data.val_fraction" in str(e.value) and "unknown_policy=replace" in str(e.value)
  assert sequence_eval.held_out(config, 3, test).shape == (3, 8)
