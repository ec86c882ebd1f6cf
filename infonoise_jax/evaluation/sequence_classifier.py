"""A small CNN on token windows whose features define a Frechet distance for DNA samples.

Trained once per (training windows, vocabulary, settings) and cached under
`seq_metrics.cache_dir` as `<sha256>.msgpack`, the hash covering the training windows' bytes,
the vocabulary, the settings and `VERSION`, so a changed dataset never reuses stale features.

Task: real training windows (label 1) versus corrupted copies (label 0): each negative window
has a random fraction u ~ U(0.05, 0.6) of its positions replaced by uniform random symbols,
half of the negatives also have their symbols shuffled within the window. The network:
one-hot (L, V) -> conv(k=5) -> GELU -> conv(k=5, dilation 2) -> GELU -> mean over positions
(the `width`-dim features) -> linear logit. Features are computed on device under jit.
"""

import hashlib
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import serialization

VERSION = 1
BATCH = 128


class WindowCNN(nn.Module):
  width: int = 64

  @nn.compact
  def __call__(self, onehot_BLV: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = nn.gelu(nn.Conv(self.width, (5,), name="conv0")(onehot_BLV))
    h = nn.gelu(nn.Conv(self.width, (5,), kernel_dilation=(2,), name="conv1")(h))
    feats_BD = h.mean(axis=1)
    return feats_BD, nn.Dense(1, name="logit")(feats_BD)[:, 0]


def corrupt(ids_NL: np.ndarray, vocab_size: int, rng: np.random.Generator) -> np.ndarray:
  """Negatives: random substitutions at a per-window rate, half of them also shuffled."""
  n, length = ids_NL.shape
  rate_N = rng.uniform(0.05, 0.6, size=(n, 1))
  out = np.where(rng.random((n, length)) < rate_N, rng.integers(0, vocab_size, (n, length)), ids_NL)
  shuffle = rng.random(n) < 0.5
  order = np.argsort(rng.random((int(shuffle.sum()), length)), axis=1)
  out[shuffle] = np.take_along_axis(out[shuffle], order, axis=1)
  return out.astype(np.int32)


def cache_key(train_NL: np.ndarray, vocab: str, width: int, steps: int, seed: int) -> str:
  h = hashlib.sha256(np.ascontiguousarray(train_NL, np.int32).tobytes())
  h.update(f"{vocab}|{width}|{steps}|{seed}|v{VERSION}".encode())
  return h.hexdigest()[:24]


class FeatureClassifier:
  """`features(ids_NL) -> (N, width)` of the trained WindowCNN (trains or loads from cache)."""

  def __init__(
    self, train_NL: np.ndarray, vocab: str, width: int, steps: int, cache_dir: str, seed: int = 0
  ):
    if steps < 1 or width < 1:
      raise ValueError(
        f"seq_metrics.classifier_steps ({steps}) and classifier_width ({width}) must be >= 1"
      )
    self.vocab_size = len(vocab)
    self.model = WindowCNN(width)
    self.path = os.path.join(cache_dir, f"{cache_key(train_NL, vocab, width, steps, seed)}.msgpack")
    template = self.model.init(jax.random.key(seed), jnp.zeros((1, train_NL.shape[1], len(vocab))))
    if os.path.exists(self.path):
      with open(self.path, "rb") as f:
        self.params = serialization.from_bytes(template, f.read())
    else:
      self.params, self.accuracy = self._train(template, train_NL, steps, seed)
      os.makedirs(cache_dir, exist_ok=True)
      tmp = f"{self.path}.tmp{os.getpid()}"
      with open(tmp, "wb") as f:
        f.write(serialization.to_bytes(self.params))
      os.replace(tmp, self.path)
      logging.info("Trained the DNA feature classifier (acc %.3f): %s", self.accuracy, self.path)
    self._features = jax.jit(lambda p, x: self.model.apply(p, x)[0])

  def _onehot(self, ids_NL: np.ndarray) -> jax.Array:
    return jax.nn.one_hot(jnp.asarray(ids_NL), self.vocab_size)

  def _train(self, params, train_NL: np.ndarray, steps: int, seed: int):
    opt = optax.adam(3e-3)
    rng = np.random.default_rng(seed % 2**64)

    def loss_fn(p, x, y):
      logits = self.model.apply(p, x)[1]
      return optax.sigmoid_binary_cross_entropy(logits, y).mean(), jnp.mean((logits > 0) == y)

    @jax.jit
    def step(p, o, x, y):
      (loss, acc), g = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y)
      u, o = opt.update(g, o, p)
      return optax.apply_updates(p, u), o, acc

    opt_state, accs = opt.init(params), []
    for _ in range(steps):
      real = train_NL[rng.integers(0, len(train_NL), BATCH // 2)]
      fake = corrupt(train_NL[rng.integers(0, len(train_NL), BATCH // 2)], self.vocab_size, rng)
      x = self._onehot(np.concatenate([real, fake]))
      y = jnp.concatenate([jnp.ones(BATCH // 2), jnp.zeros(BATCH // 2)])
      params, opt_state, acc = step(params, opt_state, x, y)
      accs.append(acc)
    return params, float(np.mean(jax.device_get(accs[-20:])))

  def features(self, ids_NL: np.ndarray, batch: int = 1024) -> np.ndarray:
    out = [
      np.asarray(self._features(self.params, self._onehot(ids_NL[i : i + batch])))
      for i in range(0, len(ids_NL), batch)
    ]
    return np.concatenate(out).astype(np.float64)
