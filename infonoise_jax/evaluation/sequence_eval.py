"""The trainer's periodic domain evaluation for token data (train.eval_every), as FID for images.

Built once before training (so missing held-out data or a bad setting fails before any
compile): a fixed set of train.eval_num_samples held-out windows (split 'test', chosen by a
seeded permutation), and the reference models fitted on the training windows (DNA: the cached
feature classifier; text: the n-gram model). Every evaluation draws the same number of EMA
samples (the same noise each time), decodes them by argmax and writes
`domain/<metric>` scalars (`sequence_metrics.dna_metrics` / `text_metrics`) and, for text, the
first seq_metrics.num_texts decoded samples as TensorBoard text.
"""

import os
from collections.abc import Callable

import ml_collections
import numpy as np
from absl import logging

from infonoise_jax.data import load_source, sequences
from infonoise_jax.data.sources import Source
from infonoise_jax.evaluation import sequence_metrics
from infonoise_jax.evaluation.sequence_classifier import FeatureClassifier


def held_out_source(config: ml_collections.ConfigDict) -> Source:
  """The held-out split ('test') of the run's token data."""
  c = config.copy_and_resolve_references()
  c.data.split = "test"
  return load_source(c)


def held_out(config: ml_collections.ConfigDict, num: int, test: Source | None = None) -> np.ndarray:
  """`num` held-out windows (token ids) of the run's data, a fixed seeded choice (`test`: its
  held-out split, if already loaded)."""
  ids_NL = (test or held_out_source(config)).token_ids
  if num > len(ids_NL):
    raise ValueError(
      f"train.eval_num_samples={num} exceeds the {len(ids_NL)} held-out windows of "
      f"data.name={config.data.name!r}; use at most that many (or raise data.val_fraction; "
      "where a warning above says held-out windows were dropped for symbols the training "
      "split lacks, --config.data.unknown_policy=replace keeps them)"
    )
  return ids_NL[np.random.default_rng(config.seed % 2**64).permutation(len(ids_NL))[:num]]


def check_held_out(config: ml_collections.ConfigDict, num: int, flag: str) -> None:
  """Scoring `num` samples (the count `flag` gives) takes 2 x `num` held-out windows: `num` to
  score them against and `num` others for the floor (SequenceEvaluator.floor). Raises, naming
  `flag` and the count that fits, before any model or sample is made."""
  have, d = held_out_source(config).num_examples, config.data
  if have < 2 * num:
    fix = (
      f"use {flag}={have // 2} or fewer"
      if have >= 4  # 2 samples at least: a covariance and a spread need two
      else "this data is too small to score: use more text or a larger data.val_fraction "
      "(a training setting: it takes a new run)"
    )
    raise ValueError(
      f"{flag}={num}: scoring token data needs 2 x {num} held-out windows ({num} to score the "
      f"samples against, {num} others for the floor), but data.name={d.name!r} with "
      f"data.path={d.path!r} gives {have} (data.val_fraction={d.val_fraction}); {fix}"
    )


def format_texts(texts: list[str]) -> str:
  """Decoded samples as TensorBoard markdown: one fenced block each, newlines kept."""
  return "\n\n".join(f"```\n{t}\n```" for t in texts)


class SequenceEvaluator:
  """`metrics(samples_NLV)` -> dict of floats; `write(...)` logs them (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, source: Source):
    if source.encoding is None:
      raise ValueError(
        f"train.eval_every needs token data (data.name=dna | text), got {config.data.name!r}"
      )
    s = config.seq_metrics
    self.config, self.encoding = config, source.encoding
    self.num = int(config.train.eval_num_samples)
    if self.num < 2:
      raise ValueError(f"train.eval_num_samples must be >= 2, got {self.num}")
    vocab, length = self.encoding.vocab, source.shape[0]
    self.is_dna = config.data.name == "dna"
    sizes = s.kmer_sizes if self.is_dna else s.ngram_sizes
    key = "seq_metrics.kmer_sizes" if self.is_dna else "seq_metrics.ngram_sizes"
    if not sizes or min(sizes) < 1 or max(sizes) > length:
      fit = [int(k) for k in sizes if 1 <= k <= length] or [min(length, 3)]  # else a short one
      fix = ",".join(map(str, fit))
      raise ValueError(
        f"{key}={tuple(sizes)}: sizes must lie in [1, data.seq_len={length}]; use "
        f"--config.{key}={fix} in training, --set {key}={fix} in evaluate"
      )
    self.sizes = tuple(int(k) for k in sizes)
    # n-grams are counted as int64 codes V^n: a large alphabet (a CJK text) caps n; said with
    # the keys to change, before any held-out data is read or classifier trained
    most = sequence_metrics.largest_ngram(len(vocab))
    orders = [(key, max(self.sizes))] + (
      [] if self.is_dna else [("seq_metrics.lm_order", s.lm_order)]
    )
    for name, n in orders:
      if n > most:
        raise ValueError(
          f"{name}: {n}-grams over this data's {len(vocab)} symbols overflow the int64 codes "
          f"they are counted by; at most {most} fits: set --config.{name} (--set in evaluate) "
          f"to sizes <= {most}"
        )
    test = held_out_source(config)
    # What the metrics are scored against (the run's header describes the training split).
    logging.info("held-out split: %s", test.describe())
    self.ref_NL = held_out(config, self.num, test)
    if self.is_dna:
      cache = s.cache_dir or os.path.join(sequences.cache_dir(), "seq_classifiers")
      clf = FeatureClassifier(
        source.token_ids, vocab, s.classifier_width, s.classifier_steps, cache, config.seed
      )
      self.features, self.lm = clf.features, None
    else:
      self.features = None
      self.lm = sequence_metrics.NgramLM(source.token_ids, int(s.lm_order), len(vocab))

  @property
  def primary(self) -> str:
    """The one metric comparisons rank by: DNA the classifier-feature Frechet distance, text
    the JS divergence of the longest character n-grams (both: lower is better)."""
    return "frechet" if self.is_dna else f"ngram_js_{max(self.sizes)}"

  def floor(self) -> dict[str, float]:
    """The metrics of as many other held-out windows (disjoint from the reference set): what
    a perfect model would score at this sample count."""
    ids_NL = held_out(self.config, 2 * self.num)[self.num :]
    return self.metrics_of_ids(ids_NL)

  def metrics(self, samples_NLV: np.ndarray) -> dict[str, float]:
    return self.metrics_of_ids(self.encoding.decode(samples_NLV))

  def metrics_of_ids(self, ids_NL: np.ndarray) -> dict[str, float]:
    if self.is_dna:
      return sequence_metrics.dna_metrics(
        ids_NL, self.ref_NL, self.encoding.vocab, self.sizes, self.features
      )
    return sequence_metrics.text_metrics(
      ids_NL, self.ref_NL, self.encoding.size, self.sizes, self.lm
    )

  def write(self, draw: Callable[[int, int], np.ndarray], writer, step: int) -> dict:
    """Draws train.eval_num_samples samples with `draw(num, seed)`, writes and returns metrics."""
    samples_NLV = draw(self.num, self.config.seed)
    values = self.metrics(samples_NLV)
    writer.write_scalars(step, {f"domain/{k}": v for k, v in values.items()})
    ids_NL = self.encoding.decode(samples_NLV[: self.config.seq_metrics.num_texts])
    texts = [self.encoding.to_text(r) for r in ids_NL]  # DNA: its bases, text: its characters
    writer.write_texts(step, {"domain/samples": format_texts(texts)})
    logging.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in sorted(values.items())))
    return values
