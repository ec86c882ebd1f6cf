"""The compiled train step kept on disk, so a restarted process neither traces nor lowers it.

JAX's persistent compilation cache (`system.compilation_cache_dir`) skips XLA's compile, but
its key is the lowered program: every process still traces and lowers the step before it can
look the cache up, about 5 s of Python for the DDPM++ step on the H200 host (BENCHMARKS.md,
issue 13 item 3). This store keeps the step's serialized executable in
`<compilation cache dir>/train_steps/`, under a key of everything the traced program depends
on, and loads it directly on the next start.

The key (`step_key`) hashes: the resolved config (it decides the model, schedule, optimizer
and step; derived values such as data.sigma_data are resolved into it before) less the keys
the step never reads (`LOOP_ONLY`: a resume with more steps still hits), the bytes of
every module of this package (any code change is a new key), the abstract state and batch
(shapes, dtypes, shardings, tree structure), the jax and jaxlib versions, the backend and its
devices, `XLA_FLAGS` and the `jax.config` values. A hit returns a `jax.stages.Compiled` that
the loop calls in place of the jitted step (same donation, same shardings: the loop's state
and batches already have exactly these types). A miss, a file that fails to load, or any
error of the store itself falls back to tracing and the persistent cache, with a log line.

Not in the key: code that changes the step from outside this package's files (a monkeypatch,
an edited site-packages library of the same version); run such experiments with
`system.store_train_step=False`. Steps loaded from the persistent cache are not stored
(`cache_hits_on_this_thread`).

Single-process runs with a local cache folder only: on a pod each process holds part of a
multi-host program, and a remote (gs://) cache folder is not written to here; the persistent
cache stays the path for both. The folder keeps the `MAX_FILES` newest executables.
Loading unpickles a file of the user's own cache folder (as JAX's cache does); do not point
`system.compilation_cache_dir` at a folder others can write.
"""

import contextlib
import hashlib
import importlib.metadata
import json
import os
import pickle
import sys
import tempfile
import threading

import jax
import jaxlib
from absl import logging
from jax.experimental import serialize_executable

from infonoise_jax import flops, resume

FOLDER = "train_steps"
MAX_FILES = 8  # newest executables kept (DDPM++ on the H200: tens of MB each)
_FORMAT = 1  # bump when what a file holds changes


@contextlib.contextmanager
def cache_hits_on_this_thread():
  """Counts JAX's persistent-cache hits of compiles made on the calling thread inside the
  block (a list that grows). An executable loaded from that cache is not stored here: on the
  CPU backend such an executable serializes without its compiled functions and fails when
  run ("Function ... not found"), so only freshly compiled steps are written."""
  hits, thread = [], threading.get_ident()

  def on_event(name: str, **kwargs) -> None:
    if name == "/jax/compilation_cache/cache_hits" and threading.get_ident() == thread:
      hits.append(name)

  jax.monitoring.register_event_listener(on_event)
  try:
    yield hits
  finally:
    jax.monitoring.unregister_event_listener(on_event)


def folder() -> str | None:
  """The store's folder under JAX's persistent cache folder; None when that cache is off
  (then nothing is stored) or the run spans several processes."""
  cache = jax.config.jax_compilation_cache_dir
  if not cache or "://" in cache or jax.process_count() > 1:
    return None
  return os.path.join(cache, FOLDER)


def package_digest() -> str:
  """SHA-256 of every .py file of this package, by relative path: any code change differs."""
  root = os.path.dirname(os.path.abspath(__file__))
  h = hashlib.sha256()
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(f for f in filenames if f.endswith(".py")):
      path = os.path.join(dirpath, name)
      h.update(os.path.relpath(path, root).encode())
      with open(path, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def _abstract(tree) -> str:
  leaves, treedef = jax.tree.flatten(tree)
  parts = [str(treedef)]
  parts += [f"{a.shape}|{a.dtype}|{getattr(a, 'weak_type', False)}|{a.sharding}" for a in leaves]
  return "\n".join(parts)


# Config keys (or sections, ending in ".") the train step never reads: those a resume may
# change (resume.RESUMABLE: the loop's cadence, data paths, sampling, FID, system) less the
# ones the step does read. Left out of the key so that a run resumed with more steps or
# another log interval still finds its step. tests/train_test.py lowers the step with every
# one of them changed and requires the same program text, so a step that starts reading one
# (or a new resumable key the step reads) fails there rather than loading a stale program.
STEP_READS = ("train.profile_bins", "optim.flat_update")
LOOP_ONLY = tuple(k for k in resume.RESUMABLE if k not in STEP_READS)


def _step_config(config) -> str:
  """The config as JSON without the LOOP_ONLY keys."""
  flat = json.loads(config.to_json_best_effort(sort_keys=True))

  def keep(prefix: str, tree: dict) -> dict:
    out = {}
    for k, v in tree.items():
      key = prefix + k
      if resume.matches(key, LOOP_ONLY):
        continue
      out[k] = keep(key + ".", v) if isinstance(v, dict) else v
    return out

  return json.dumps(keep("", flat), sort_keys=True)


def _library_versions() -> str:
  """Python and the libraries the step's code comes from besides this package."""
  out = [sys.version]
  for name in ("flax", "optax", "chex", "numpy", "ml_collections"):
    try:
      out.append(f"{name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      out.append(f"{name} absent")
  return " | ".join(out)


def step_key(config, abstract_state, abstract_batch) -> str:
  """Hex key of the program `jit(train_step)(abstract_state, abstract_batch)` would build."""
  devices = jax.devices()
  backend = devices[0].client
  parts = [
    f"format {_FORMAT}",
    _step_config(config),
    package_digest(),
    _abstract((abstract_state, abstract_batch)),
    f"jax {jax.__version__} jaxlib {jaxlib.__version__}",
    _library_versions(),
    f"{backend.platform} {backend.platform_version}",
    "|".join(f"{d.id}:{d.device_kind}" for d in devices),
    os.environ.get("XLA_FLAGS", ""),
    repr(sorted((k, repr(v)) for k, v in jax.config.values.items())),
  ]
  return hashlib.sha256("\n\n".join(parts).encode()).hexdigest()[:32]


def load(directory: str, key: str, devices):
  """(Compiled, StepFlops) stored under `key`, or None (missing, or unreadable: logged).
  `devices`: the run's mesh devices in mesh order (the executable's device assignment)."""
  path = os.path.join(directory, f"{key}.pkl")
  if not os.path.exists(path):
    return None
  try:
    with open(path, "rb") as f:
      fmt, payload, in_tree, out_tree, count = pickle.load(f)
    if fmt != _FORMAT:
      return None
    compiled = serialize_executable.deserialize_and_load(
      payload, in_tree, out_tree, execution_devices=list(devices)
    )
    os.utime(path)  # recently used: kept by _prune
  except Exception as e:  # a torn or foreign file: compile as if it were not there
    logging.warning(
      "Ignoring the stored train step %s (%s: %s); compiling it.", path, type(e).__name__, e
    )
    return None
  return compiled, flops.StepFlops(*count)


def save(directory: str, key: str, compiled, count: flops.StepFlops) -> str | None:
  """Writes the executable under `key` (atomically) and prunes the folder to MAX_FILES.
  Returns the path, or None where the executable cannot be serialized (logged)."""
  try:
    payload, in_tree, out_tree = serialize_executable.serialize(compiled)
    blob = pickle.dumps((_FORMAT, payload, in_tree, out_tree, tuple(count)))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
      f.write(blob)
    path = os.path.join(directory, f"{key}.pkl")
    os.replace(tmp, path)
  except Exception as e:  # the run goes on; the next start traces the step again
    logging.warning("Could not store the compiled train step (%s: %s).", type(e).__name__, e)
    return None
  _prune(directory)
  return path


def _prune(directory: str) -> None:
  files = [os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".pkl")]
  files.sort(key=os.path.getmtime, reverse=True)
  for path in files[MAX_FILES:]:
    try:
      os.remove(path)
    except OSError:  # another process pruned it first
      pass
