"""Config validation that runs once, before anything is compiled or read.

Each component validates its own section where it is built (`make_schedule`,
`make_model`, `load_source`, `solvers.make_sigmas`); this module checks the rest and
that a config defines exactly the keys of `configs/default.py`, so a typo in a derived
config fails with the key's name instead of being silently ignored.
"""

import ast
import difflib
import importlib.util
import json
import math
import os
import pathlib

import jax
import ml_collections
from etils import epath

from infonoise_jax import log_sigma, solvers
from infonoise_jax.data.sources import TOKEN_NAMES


def config_dir() -> pathlib.Path:
  """The shipped configs: `infonoise_jax.configs` when installed, `<checkout>/configs` otherwise."""
  spec = importlib.util.find_spec("infonoise_jax.configs")
  if spec is not None and spec.submodule_search_locations:
    return pathlib.Path(next(iter(spec.submodule_search_locations)))
  return pathlib.Path(__file__).resolve().parents[1] / "configs"


DEFAULT_CONFIG_PATH = config_dir() / "default.py"


def resolve_config_path(path: str | pathlib.Path) -> pathlib.Path:
  """`path` if it is a file; else the shipped config of that file name (`configs/test.py`
  run from any directory, e.g. by an installed `infonoise-train`). Raises naming both."""
  given = pathlib.Path(path).expanduser()
  if given.is_file():
    return given
  shipped = config_dir() / given.name
  if shipped.is_file():
    return shipped
  names = sorted(p.name for p in config_dir().glob("*.py") if not p.name.startswith("_"))
  raise FileNotFoundError(
    f"Config file {str(path)!r} not found (relative to {pathlib.Path.cwd()}) and not a shipped "
    f"config ({', '.join(names)} in {config_dir()}); give the path of your config file."
  )


def load_config_file(path: str | pathlib.Path, arg: str | None = None) -> ml_collections.ConfigDict:
  """Loads `get_config(arg)` from a config file by path (as ml_collections' flags do); a path
  that does not exist is looked up among the shipped configs (`resolve_config_path`). A run's
  `config.json` (a `.json` path) is read as that run's config (`config_from_json`)."""
  if str(path).endswith(".json"):  # local or gs://
    if arg:
      raise ValueError(f"{path}:{arg}: a run's config.json takes no ':variant'")
    given = epath.Path(os.path.expanduser(str(path)))
    if not given.is_file():
      raise FileNotFoundError(
        f"Config file {str(path)!r} not found (relative to {pathlib.Path.cwd()})"
      )
    return config_from_json(given)
  path = resolve_config_path(path)
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def _tuples(value):
  """JSON lists -> tuples (config.json stores the config's tuples as lists)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def migrate_config(d: dict, path: str = "config.json") -> dict:
  """Brings a config.json written by an older version to the current keys (in place).

  * `schedule.infonoise.sigma_min/sigma_max` (until the sigma range became the one setting
    `edm.sigma_min/sigma_max`): dropped when equal to the edm range (every run made with the
    defaults); a run whose InfoNoise grid differed from its edm range cannot be expressed
    any more and is an error naming both.
  * `fid.seed_sets` (read by nothing; the evaluate command has --seed_sets): dropped.
  * `optim.flat_update` (absent before the flat optimizer layout): False, the leaf-by-leaf
    layout those runs trained with (either would restore: `Checkpointer.restore` converts).
  """
  d.get("fid", {}).pop("seed_sets", None)
  if "optim" in d:
    d["optim"].setdefault("flat_update", False)
  info, edm = d.get("schedule", {}).get("infonoise", {}), d.get("edm", {})
  for key in ("sigma_min", "sigma_max"):
    if key in info:
      old = info.pop(key)
      if old != edm.get(key):
        raise ValueError(
          f"{path}: schedule.infonoise.{key} = {old} differs from edm.{key} = {edm.get(key)}; "
          "the InfoNoise grid now spans the edm range (one setting), so this run's schedule "
          f"cannot be rebuilt. Set edm.{key} to {old} in {path} to read it on that range."
        )
  return d


def config_from_json(path) -> ml_collections.ConfigDict:
  """The config a run wrote to its `config.json` (a local path, or an epath for gs://),
  migrated to the current keys (`migrate_config`); keys configs/default.py does not define
  are an error naming them (the run was made by other code)."""
  path = epath.Path(path)
  try:
    d = json.loads(path.read_text())
  except ValueError as e:
    raise ValueError(f"{path} is not a run's config.json: {e}") from None
  if not isinstance(d, dict):
    raise ValueError(f"{path} is not a run's config.json: its JSON is not an object of keys")
  config = ml_collections.ConfigDict(_tuples(migrate_config(d, str(path))))
  unknown = unknown_keys(config)
  if unknown:  # not a typo of the user's: the run was made by other code
    raise ValueError(
      f"{path} holds config key(s) {unknown} that this checkout's configs/default.py does not "
      "define: the run was made by code with a schedule or setting since removed or renamed. "
      "Read it with that code, or delete those keys from the file if the run never used them."
    )
  # Keys added to the code since the run wrote the file take this checkout's defaults, as a
  # resume of the run does (resume.changes): sample, evaluate, diagnose and --config=config.json
  # failed on them with AttributeError / KeyError tracebacks (a 2026-11-27 run's
  # schedule.infonoise.onset_refreshes, train.trace_start).
  filled = default_config()
  try:
    filled.update_from_flattened_dict(flat_items(config.to_dict()))
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: a value does not fit this checkout's config ({e})") from None
  return filled


def parse_overrides(items, flag: str = "--set") -> dict:
  """['a.b=1', 'c=x'] -> {'a.b': 1, 'c': 'x'} (Python literals, else strings), for
  `ConfigDict.update_from_flattened_dict` in scripts that take `--set key=value` (`flag`
  names the option in the error)."""
  out = {}
  for item in items or []:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"{flag} expects key=value, got {item!r}")
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def apply_overrides(config: ml_collections.ConfigDict, items, flag: str = "--set") -> None:
  """Applies `flag key=value` items to `config` in place; an unknown key or a value of the
  wrong type is a ValueError naming the item (before any data is read)."""
  update_checked(config, parse_overrides(items, flag), flag)


def update_checked(config: ml_collections.ConfigDict, flat: dict, flag: str = "--set") -> None:
  """`config.update_from_flattened_dict(flat)`, one key at a time: an unknown key (with the
  closest known one) or a value of the wrong type is a ValueError naming `flag` and the key."""
  known = flat_keys(config)
  for key, value in flat.items():
    if key not in known:
      raise ValueError(
        f"{flag} {key}=...: no such config key.{did_you_mean(known, key)} Every key is defined "
        "in configs/default.py"
      )
    node = config
    for part in key.split(".")[:-1]:
      node = node[part]
    default = node[key.split(".")[-1]]
    if isinstance(default, float) and isinstance(value, str):
      value = _float_word(value)  # inf / -inf / nan, which Python literals cannot spell
    elif isinstance(default, bool):
      value = _bool_word(value)  # false / true / 0 / 1, as the trainer's flags take them
    elif isinstance(default, tuple) and isinstance(value, int | float):
      value = (value,)  # one number for a tuple key, as the trainer's --config flags take it
    try:
      config.update_from_flattened_dict({key: value})
    except (TypeError, ValueError) as e:
      raise ValueError(f"{flag} {key}={value!r}: {e}") from e


def _float_word(text: str):
  """'inf', '-inf', 'infinity', 'nan' (any case) as floats, as the trainer's --config flags take
  them; any other text unchanged (the type check then names it)."""
  if text.strip().lower().lstrip("+-") in ("inf", "infinity", "nan"):
    return float(text)
  return text


def _bool_word(value):
  """'true' / 'false' / 't' / 'f' / 1 / 0 (any case) as bools, as the trainer's --config flags
  (absl) take them; anything else unchanged (the type check then names it)."""
  words = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}
  return words.get(str(value).strip().lower(), value)


def default_config(variant: str = "") -> ml_collections.ConfigDict:
  """The shipped `configs/default.py` config; a config file of your own, anywhere on disk, can
  start from it: `from infonoise_jax.validation import default_config`."""
  return load_config_file(DEFAULT_CONFIG_PATH, variant)


def nearest_keys(known, key: str) -> list[str]:
  """The known dotted config keys a mistyped `key` most likely meant (at most three, closest
  first; none when nothing is near): a whole key a letter or two away (`trian.num_steps` ->
  `train.num_steps`); else keys in other sections with `key`'s last part (`train.lr` ->
  `optim.lr`); else the whole key closest by spelling; else keys whose last part is spelled
  close to `key`'s or abbreviates it by its words' initials (`train.learning_rate` ->
  `optim.lr`)."""
  score = {k: difflib.SequenceMatcher(None, k, key).ratio() for k in known}
  # closest whole key first in each tier (`train.bs`: train.batch_size before fid.batch_size)
  known = sorted(known, key=lambda k: -score[k])
  leaf = key.rsplit(".", 1)[-1]

  def initials(name: str) -> str:
    return "".join(w[0] for w in name.split("_") if w)

  if known and score[known[0]] >= 0.9:
    return known[:1]  # a letter or two away
  same = [k for k in known if k.rsplit(".", 1)[-1] == leaf]
  if same:
    return same[:3]
  if known and score[known[0]] >= 0.75:
    return known[:1]
  return [
    k
    for k in known
    if difflib.SequenceMatcher(None, other := k.rsplit(".", 1)[-1], leaf).ratio() >= 0.8
    or (len(other) > 1 and other == initials(leaf))
    or (len(leaf) > 1 and leaf == initials(other))
  ][:3]


def did_you_mean(known, key: str) -> str:
  """' Did you mean "a.b"?' (several joined by "or") for `nearest_keys`, or ""."""
  close = nearest_keys(known, key)
  return " Did you mean " + " or ".join(f'"{k}"' for k in close) + "?" if close else ""


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
  """Every leaf key of `config` as a dotted path ("train.num_steps")."""
  keys = set()
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      keys |= flat_keys(v, f"{prefix}{k}.")
    else:
      keys.add(f"{prefix}{k}")
  return keys


def flat_items(tree: dict, prefix: str = "") -> dict:
  """{dotted key: leaf value} of a nested dict (a config as JSON: config.json, a record's
  resolved "config"), the values `flat_keys` names."""
  out = {}
  for k, v in tree.items():
    out.update(flat_items(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def unknown_keys(
  config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict | None = None
) -> list[str]:
  """The keys of `config` that configs/default.py (`defaults`, if loaded) does not define."""
  return sorted(flat_keys(config) - flat_keys(defaults or default_config()))


def check_keys(
  config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict | None = None
) -> None:
  """Every key must be one that configs/default.py defines (catches typos); `defaults`: that
  config, if the caller has it loaded."""
  defaults = defaults or default_config()  # loaded once for the check and the hints
  known = flat_keys(defaults)
  unknown = unknown_keys(config, defaults)
  if unknown:
    hints = "".join(f"{hint[:-1]} for {k}?" for k in unknown if (hint := did_you_mean(known, k)))
    raise ValueError(
      f"Unknown config key(s) {unknown}: every key must be defined in configs/default.py.{hints} "
      "Check the spelling, or add the key there with its units."
    )


def _require(ok: bool, key: str, message: str) -> None:
  if not ok:
    raise ValueError(f"config.{key}: {message}")


def _value(config: ml_collections.ConfigDict, key: str):
  for part in key.split("."):
    config = config[part]
  return config


def _check_no_nan(config: ml_collections.ConfigDict) -> None:
  """No float setting may be NaN (a NaN compares False with every bound below)."""
  for key in sorted(flat_keys(config)):
    value = _value(config, key)
    values = value if isinstance(value, tuple | list) else (value,)
    bad = any(isinstance(v, float) and math.isnan(v) for v in values)
    _require(not bad, key, f"must be a number, got {value}")


def _is_whole(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def check_whole_number_tuples(
  config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict
) -> None:
  """A tuple key whose default holds whole numbers (widths, multipliers, resolutions, k-mer
  sizes) must hold whole numbers: on the command line a malformed tuple such as (1,2,x) is
  read as one string, 64.7 would be truncated and True would be a width of 1."""
  for key in sorted(flat_keys(config)):
    default, value = _value(defaults, key), _value(config, key)
    if isinstance(default, tuple) and default and all(map(_is_whole, default)):
      ok = isinstance(value, tuple | list) and all(map(_is_whole, value))
      example = "(" + ",".join(map(str, default)) + ")"
      none = " or '()' for none" if key.endswith("attn_resolutions") else ""  # attention off
      _require(ok, key, f"must be a tuple of whole numbers, e.g. '{example}'{none}; got {value!r}")


# data.* keys only some sources read (the image keys on token data are refused by the token
# source itself): set to anything but their default for another source, they did nothing.
TOKEN_DATA_KEYS = ("seq_len", "window_stride", "val_fraction", "vocab", "unknown_policy")
SYNTHETIC_DATA_KEYS = {
  "num_examples": ("gaussian_mixture", "toy2d"),
  "num_components": ("gaussian_mixture",),
  "component_std": ("gaussian_mixture",),
  "dim": ("gaussian_mixture",),
}


def _check_data_keys_apply(d: ml_collections.ConfigDict, default: ml_collections.ConfigDict):
  """A data key changed from its default for a source that does not read it is an error."""
  name = str(d.name)
  base = name.partition(":")[0]
  readers = {k: TOKEN_NAMES for k in TOKEN_DATA_KEYS} | SYNTHETIC_DATA_KEYS
  for key, sources in readers.items():
    if d[key] != default[key] and base not in sources:
      raise ValueError(
        f"data.{key}={d[key]!r}: only data.name={' | '.join(sources)} reads it, and "
        f"data.name={name!r} does not; leave it at its default ({default[key]!r})"
      )


def validate_config(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ValueError naming the key for any invalid general setting."""
  defaults = default_config()
  check_keys(config, defaults)
  _check_no_nan(config)
  check_whole_number_tuples(config, defaults)
  d = config.data
  _check_data_keys_apply(d, defaults.data)
  _require(0 < d.scale < math.inf, "data.scale", f"must be a finite number > 0, got {d.scale}")
  _require(d.num_examples >= 1, "data.num_examples", f"must be >= 1, got {d.num_examples}")
  t, o, e = config.train, config.optim, config.edm
  n_dev = jax.device_count() if num_devices is None else num_devices
  n_proc = jax.process_count()
  _require(t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}")
  down = t.batch_size // n_dev * n_dev  # the multiples of the device count around the batch
  fit = max(d for d in range(1, n_dev + 1) if t.batch_size % d == 0) if t.batch_size >= 1 else 1
  _require(
    t.batch_size % n_dev == 0,
    "train.batch_size",
    f"global batch {t.batch_size} is not divisible by the {n_dev} devices; use a multiple, "
    f"e.g. --config.train.batch_size={down + n_dev}{f' (or {down})' if down else ''}; a "
    f"resumed run keeps its batch: run it on a device count that divides {t.batch_size} (e.g. "
    f"{fit}: on a GPU host CUDA_VISIBLE_DEVICES={','.join(map(str, range(fit)))}, on a CPU "
    f"host JAX_NUM_CPU_DEVICES={fit})",
  )
  _require(t.batch_size % n_proc == 0, "train.batch_size", f"not divisible by {n_proc} processes")
  _require(t.num_steps >= 1, "train.num_steps", f"must be >= 1, got {t.num_steps}")
  _require(
    config.data.num_workers >= -1,
    "data.num_workers",
    f"must be >= 0, or -1 for auto, got {config.data.num_workers}",
  )
  for key in ("log_every", "checkpoint_every", "keep_checkpoints", "num_samples"):
    _require(t[key] >= 1, f"train.{key}", f"must be >= 1, got {t[key]}")
  _require(  # one bin failed at the first log flush, after compiling and training
    t.profile_bins >= 2,
    "train.profile_bins",
    f"must be >= 2 (bins of the loss-by-noise-level summary), got {t.profile_bins}",
  )
  _require(
    isinstance(config.seed, int) and -(2**63) <= config.seed < 2**63,
    "seed",
    f"must be an integer that fits in 64 bits (jax.random.key), got {config.seed!r}",
  )
  _require(
    config.seq_metrics.num_texts >= 0,
    "seq_metrics.num_texts",
    f"must be >= 0 (decoded samples logged as text; 0 = none), got {config.seq_metrics.num_texts}",
  )
  for key in ("sample_every", "fid_every", "eval_every", "trace_start"):
    _require(t[key] >= 0, f"train.{key}", f"must be >= 0 (0 = off), got {t[key]}")
  _require(
    not t.eval_every or config.data.name in TOKEN_NAMES,
    "train.eval_every",
    f"logs the domain metrics of token data (data.name={' | '.join(TOKEN_NAMES)}), but "
    f"data.name={config.data.name!r}; image runs log FID with train.fid_every (0 = off)",
  )
  _require(t.trace_steps >= 1, "train.trace_steps", f"must be >= 1, got {t.trace_steps}")
  _require(  # read at the first FID, after training (a cached reference skips it at the start)
    config.fid.batch_size >= 1,
    "fid.batch_size",
    f"must be >= 1 (images per Inception pass), got {config.fid.batch_size}",
  )
  _require(
    t.max_steps_in_flight >= 0,
    "train.max_steps_in_flight",
    f"must be >= 0 (0 = unbounded), got {t.max_steps_in_flight}; e.g. "
    "--config.train.max_steps_in_flight=4",
  )
  _require(0 < o.lr < math.inf, "optim.lr", f"must be a finite number > 0, got {o.lr}")
  _require(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
  for key in ("b1", "b2"):
    _require(0 <= o[key] < 1, f"optim.{key}", f"must be in [0, 1), got {o[key]}")
  _require(
    o.eps > 0,
    "optim.eps",
    f"must be > 0 (Adam divides by sqrt(v) + eps; 0 gives NaN where a gradient is 0), got "
    f"{o.eps}; e.g. --config.optim.eps=1e-8",
  )
  _require(
    0 <= o.grad_clip < math.inf,
    "optim.grad_clip",
    f"must be a finite number >= 0 (0 = off), got {o.grad_clip}",
  )
  _require(
    0 < o.ema_halflife_kimg < math.inf,
    "optim.ema_halflife_kimg",
    f"must be a finite number > 0, got {o.ema_halflife_kimg}",
  )
  _require(
    0 <= o.ema_warmup_ratio < math.inf,
    "optim.ema_warmup_ratio",
    f"must be a finite number >= 0 (0 = off), got {o.ema_warmup_ratio}",
  )
  _require(
    0 <= e.sigma_data < math.inf,  # inf passed and turned the first step NaN
    "edm.sigma_data",
    f"must be finite and > 0, or 0 for token data (the one-hot std), got {e.sigma_data}",
  )
  log_sigma.sigma_range(config)
  _require(
    config.model.dtype in ("float32", "bfloat16"),
    "model.dtype",
    f"must be 'float32' or 'bfloat16', got {config.model.dtype!r}",
  )
  _require(
    0 <= config.system.peak_tflops < math.inf,
    "system.peak_tflops",
    f"must be a finite number >= 0 (0 = from the device table), got {config.system.peak_tflops}",
  )
  solvers.validate_sampler_config(config)  # used at the end of training: fail now, not then
