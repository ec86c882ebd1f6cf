"""Command-line entry: flags -> (optional) jax.distributed init -> train_and_evaluate.

  python -m infonoise_jax.main --config=configs/default.py --workdir=runs/digits \
      --config.train.num_steps=2000 --config.schedule.name=lognormal

A `:variant` suffix on the config path is passed to its get_config (see configs/). Installed,
the same command is `infonoise-train --config=configs/default.py ...` from any directory: a
config path that does not exist is looked up among the shipped configs by file name.
"""

import logging as logging_lib
import os
import re
import sys

import jax
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from infonoise_jax import cli, train
from infonoise_jax.mesh import configure_compilation_cache, initialize_distributed
from infonoise_jax.paths import is_remote
from infonoise_jax.validation import (
  config_dir,
  did_you_mean,
  flat_keys,
  load_config_file,
  resolve_config_path,
)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and samples.")
flags.DEFINE_bool(
  "fresh", False, "Start over in a workdir that has logs but no checkpoint (old logs moved aside)."
)
flags.DEFINE_bool("debug", False, "Show the full traceback of an error (or INFONOISE_DEBUG=1).")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging_lib.Filter):
  """Drops INFO chatter of Orbax and absl's own internals; warnings still pass."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    noisy = "/orbax/" in record.pathname or "/jax/_src/" in record.pathname
    return record.levelno >= logging_lib.WARNING or not noisy


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  cli.run_command(_train_command, FLAGS.debug)


def _train_command() -> None:
  config = FLAGS.config
  initialize_distributed(config)
  configure_compilation_cache(config.system)
  logging.info(
    "JAX process %d/%d, %d local devices: %s",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.devices()[0].device_kind,
  )
  if not FLAGS.workdir.strip():
    raise ValueError("--workdir is empty: give the run's folder, e.g. --workdir=runs/digits")
  workdir = os.path.expanduser(FLAGS.workdir)
  train.train_and_evaluate(config, workdir, fresh=FLAGS.fresh)


def _resolve_config_arg(argv: list[str]) -> list[str]:
  """`--config=PATH[:variant]` (or `--config PATH...`) with PATH resolved by
  `resolve_config_path`, so the shipped configs are found from any directory."""

  def resolve(value: str) -> str:
    if value.endswith(".json"):  # a run's config.json (local or gs://): configs/run_json.py
      given = value if is_remote(value) else os.path.abspath(os.path.expanduser(value))
      if not epath.Path(given).is_file():
        raise app.UsageError(
          f"--config={value}: not found (a run's config.json, e.g. runs/a/config.json)"
        )
      return f"{config_dir() / 'run_json.py'}:{given}"
    path, sep, variant = value.partition(":")
    if path.endswith(".json"):
      raise app.UsageError(f"--config={value}: a run's config.json takes no ':variant'")
    try:
      return f"{resolve_config_path(path)}{sep}{variant}"
    except FileNotFoundError as e:
      raise app.UsageError(f"--config: {e}") from None

  out = list(argv[:1])
  args = iter(argv[1:])
  for a in args:
    if a.startswith("--config="):
      a = "--config=" + resolve(a.removeprefix("--config="))
    elif a == "--config":
      out.append(a)
      a = resolve(next(args, ""))
    out.append(a)
  return out


def _flag_error(e: Exception, argv: list[str]) -> str:
  """One line for a command line that cannot be parsed, naming the flag or key."""
  text = str(e)
  if isinstance(e, AttributeError) and "get_config" in text:  # a .py file that is no config
    given = [a.removeprefix("--config=") for a in argv if a.startswith("--config=")]
    return (
      f"--config={given[-1] if given else '...'}: the file defines no get_config(). A config is a "
      "Python file whose get_config() returns a ConfigDict (start from "
      "`from infonoise_jax.validation import default_config`, as configs/*.py do), or a run's "
      "config.json"
    )
  if isinstance(e, KeyError | AttributeError):  # an override of a key the config lacks
    # ml_collections' text: 'num_stepz' [Did you mean "num_steps" instead of "num_stepz"?]
    guess = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
    key = guess.group(2) if guess else next(iter(re.findall(r"\w+", text)), "?")
    given = [a.split("=")[0] for a in argv if re.match(rf"--config\.(\w+\.)*{key}(\.|=|$)", a)]
    where = given[0] if given else f"--config override {key!r}"
    hint = _nearest_key_hint(where.removeprefix("--config."), argv) if given else ""
    if not hint and guess:
      hint = f' Did you mean "{guess.group(1)}"?'
    return f"{where}: no such config key.{hint} Every key is defined in configs/default.py."
  if "Traceback (most recent call last)" in text:  # the config file's own error, e.g. a variant
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    flag = lines[0].split(": Error whilst parsing")[0]
    cause = re.sub(r"^\w+(Error|Exception): ", "", lines[-1])
    return f"{flag}: {cause}"
  extra = " (--helpshort lists the flags)" if isinstance(e, flags.UnrecognizedFlagError) else ""
  return cli.one_line(e) + extra


def _nearest_key_hint(key: str, argv: list[str]) -> str:
  """validation.did_you_mean for a mistyped dotted `key`, against the keys of the config file
  the command line names (loaded again: its flag failed to parse); "" when that cannot load."""
  given = [a.removeprefix("--config=") for a in argv if a.startswith("--config=")]
  given += [b for a, b in zip(argv, argv[1:], strict=False) if a == "--config"]
  if not given:
    return ""
  path, sep, variant = given[-1].partition(":")
  try:
    config = load_config_file(path, variant if sep else None)
  except Exception:  # the file's own error is not this line's to report
    return ""
  return did_you_mean(flat_keys(config), key)


def _check_no_repeated_override(argv: list[str]) -> None:
  """A `--config.KEY` given twice is refused: absl keeps the last value of most keys but joins
  the values of a list-valued one (hidden_dims (256, 256) then (128, 128) trained a
  [256, 256, 128, 128] network, silently). `--config` itself twice is refused too: the
  second file was not read (ml_collections kept the first one's config)."""
  files = [a for a in argv[1:] if a == "--config" or a.startswith("--config=")]
  if len(files) > 1:
    raise app.UsageError(f"--config is given {len(files)} times: give one config file")
  keys = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
  repeated = sorted({k for k in keys if keys.count(k) > 1})
  if repeated:
    raise app.UsageError(
      f"{repeated[0]} is given {keys.count(repeated[0])} times: give each config key once "
      "(the values of a list-valued key would be joined, not replaced)"
    )


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, ending a bad command line as every user error ends (cli.py): one
  `error:` line naming the flag or key (a config file that is not there, a variant it does not
  have, a mistyped key or value, an unknown flag); --debug / INFONOISE_DEBUG=1 keep the
  traceback."""
  try:
    _check_no_repeated_override(argv)
    return FLAGS(_resolve_config_arg(argv))
  except (flags.Error, app.UsageError, AttributeError, KeyError, TypeError, ValueError) as e:
    if cli.debug_requested("--debug" in argv):
      raise
    hint = f"(--debug or {cli.DEBUG_ENV}=1 shows the traceback)"
    print(f"error: {_flag_error(e, argv)} {hint}", file=sys.stderr, flush=True)
    sys.exit(cli.ERROR_EXIT_CODE)


def run() -> None:
  """Console script `infonoise-train` (the same as `python -m infonoise_jax.main`)."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
