"""What a resumed run may change, and the record of it: `config.json` and its history.

A workdir holds one run. Its resolved config is `<workdir>/config.json`; a resume may change
only the keys of `RESUMABLE` (how long to train, how often to log and save, where the data
lives, sampling and evaluation settings, the machine layout, the optimizer state's layout),
since they do not change what the saved state means, and the keys of `schedule.<section>`s
that the run's schedule does not read (`schedules.config_sections`: a Laplace setting on an
InfoNoise run). Any other change (seed, batch size, data, model, schedule, optimizer, EDM
constants) is refused before anything is written. Accepted changes are appended, one JSON
line per resume, to `<workdir>/config_history.jsonl`; `config.json` is then rewritten with the
new values. See docs/reliability.md.
"""

import datetime
import json
import os
import shlex

import ml_collections
from absl import logging

from infonoise_jax import paths, schedules
from infonoise_jax.data.sources import DATA_LOCATION_KEYS
from infonoise_jax.validation import flat_items, migrate_config

# Keys (or whole sections, ending in ".") a resume may change.
RESUMABLE = (
  "train.num_steps",
  "train.log_every",
  "train.checkpoint_every",
  "train.keep_checkpoints",
  "train.max_steps_in_flight",
  "train.sample_every",
  "train.num_samples",
  "train.fid_every",
  "train.fid_num_samples",
  "train.profile_bins",
  "train.trace_start",
  "train.trace_steps",
  "train.trace_python",
  "train.eval_every",
  "train.eval_num_samples",
  "data.tfds_data_dir",
  "data.local_dir",
  "data.path",
  "data.vocab",  # the vocabulary itself is checked against the checkpoint's (check_same_vocabulary)
  "data.unknown_policy",  # which letters / windows of new files are used, not what ids mean
  "data.num_workers",
  "optim.flat_update",  # the same arithmetic; the optimizer state is converted on restore
  "sampler.",
  "fid.",
  "seq_metrics.",
  "system.",
)
CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"


class ResumeRefusedError(ValueError):
  """A resume would change a key that fixes what the saved state means."""


def matches(key: str, patterns) -> bool:
  """`key` is one of `patterns`, or inside a section of them (a pattern ending in ".")."""
  return any(key == k or (k.endswith(".") and key.startswith(k)) for k in patterns)


def is_resumable(key: str) -> bool:
  return matches(key, RESUMABLE)


def schedule_sections(config: ml_collections.ConfigDict, diff: dict[str, tuple]) -> set | None:
  """The `schedule.<section>`s the run's schedule reads (`schedules.config_sections`): those of
  the new config's schedule.name and, when it changed (refused anyway), the saved one's too.
  None when a schedule does not declare them: every section counts."""
  names = {config.schedule.name}
  if "schedule.name" in diff:
    names.add(diff["schedule.name"][0])
  sections = set()
  for name in names:
    declared = schedules.config_sections(name)
    if declared is None:
      return None
    sections.update(declared)
  return sections


def unread_schedule_keys(
  config: ml_collections.ConfigDict, diff: dict[str, tuple]
) -> dict[str, tuple]:
  """The changes in `diff` to keys of schedule sections the run's schedule never reads (a
  `schedule.laplace.mu` on an InfoNoise run): they do not touch the saved state."""
  sections = schedule_sections(config, diff)
  if sections is None:
    return {}
  return {
    k: v
    for k, v in diff.items()
    if k.count(".") >= 2 and k.startswith("schedule.") and k.split(".")[1] not in sections
  }


def refused(config: ml_collections.ConfigDict, diff: dict[str, tuple]) -> dict[str, tuple]:
  """The changes in `diff` a resume refuses: not resumable, and not in a schedule section the
  run's schedule never reads."""
  unread = unread_schedule_keys(config, diff)
  return {k: v for k, v in diff.items() if not is_resumable(k) and k not in unread}


def _as_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def changes(
  config: ml_collections.ConfigDict, workdir: str, meta: dict | None = None
) -> dict[str, tuple]:
  """{key: (saved value, new value)} for every key whose value differs from config.json.

  Without config.json (deleted, or a run from before it was written) the copy saved with the
  checkpoint (`meta`, the newest checkpoint's metadata) stands in for it; with neither, empty.
  Keys only one side has (the code gained or lost a key) are not changes.
  """
  path = paths.run_path(workdir) / CONFIG_FILE
  if not path.exists():
    if not (meta and "config" in meta):
      return {}
    logging.warning(
      "%s is missing: the resume is checked against the config saved with checkpoint %s, "
      "and config.json is written again from the accepted config",
      path,
      meta.get("step"),
    )
    saved = flat_items(migrate_config(json.loads(json.dumps(meta["config"])), str(path)))
    return _differences(saved, config)
  try:
    saved = flat_items(migrate_config(json.loads(path.read_text()), str(path)))
  except (OSError, ValueError) as e:
    raise ValueError(
      f"{path} is unreadable ({e}); restore it from a backup, or start a new --workdir"
    ) from e
  return _differences(saved, config)


def _differences(saved: dict, config: ml_collections.ConfigDict) -> dict[str, tuple]:
  new = flat_items(_as_json(config))
  dump = lambda v: json.dumps(v, sort_keys=True)
  return {
    k: (saved[k], new[k])
    for k in sorted(saved.keys() & new.keys())
    if dump(saved[k]) != dump(new[k])
  }


def is_earlier_attempt(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """True if the workdir's config.json is this config's, up to keys a resume may change: logs
  without checkpoints there are then this run's own, from an attempt stopped before its first
  checkpoint (config.json is written before the first step)."""
  if not (paths.run_path(workdir) / CONFIG_FILE).exists():
    return False
  return not refused(config, changes(config, workdir))


def check(
  config: ml_collections.ConfigDict, workdir: str, step: int, meta: dict | None = None
) -> dict[str, tuple]:
  """Raises ResumeRefusedError naming every refused key; returns the accepted changes.
  `meta`: the newest checkpoint's metadata (its config copy stands in for a lost config.json)."""
  diff = changes(config, workdir, meta)
  refused_changes = refused(config, diff)
  if refused_changes:
    listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused_changes.items())
    keep = " ".join(
      shlex.quote(f"--config.{k}={_flag_value(old)}") for k, (old, _) in refused_changes.items()
    )
    raise ResumeRefusedError(
      f"Cannot resume {workdir} at step {step} with a changed {listed}: these keys fix what "
      f"the saved state means. To resume with the saved values add {keep} (a key you did not "
      "set changed with this checkout's defaults or your config file since the run started), "
      f"or pass {shlex.quote('--config=' + os.path.join(workdir, CONFIG_FILE))}; to train with "
      "the new ones, start a new --workdir. Nothing was written."
    )
  return diff


def _flag_value(value) -> str:
  """A saved config value as a `--config.KEY=` flag takes it (tuples as '(1,2)')."""
  if isinstance(value, list | tuple):
    return "(" + ",".join(map(_flag_value, value)) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def data_changes_since(workdir: str, step: int) -> list[str]:
  """The data-location changes recorded at a resume at or after `step` (HISTORY_FILE), in
  words: the checkpoint of `step` was trained on the data before them, while `sample` /
  `evaluate` read config.json, which names the data after them. [] when there are none."""
  history = paths.run_path(workdir) / HISTORY_FILE
  if not history.exists():
    return []
  out = []
  for line in history.read_text().splitlines():
    try:
      entry = json.loads(line)
    except ValueError:
      continue  # a damaged history line costs this notice, never the command
    if not isinstance(entry, dict) or entry.get("resumed_at_step", -1) < step:
      continue
    for key, change in sorted(entry.get("changes", {}).items()):
      if key in DATA_LOCATION_KEYS:
        out.append(
          f"step {step} was trained on {key}={change['from']!r}, changed to {change['to']!r} "
          f"when the run resumed at step {entry['resumed_at_step']} ({HISTORY_FILE}): it is "
          f"scored against the run's current data; --set {key}={change['from']} scores it "
          "against the data it trained on"
        )
  return out


def record(
  config: ml_collections.ConfigDict, workdir: str, step: int, accepted: dict[str, tuple]
) -> None:
  """Writes config.json (atomically) and appends the accepted changes to the history."""
  run = paths.run_path(workdir)
  run.mkdir(parents=True, exist_ok=True)
  tmp = run / (CONFIG_FILE + ".tmp")
  tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  tmp.replace(run / CONFIG_FILE)
  if accepted:
    entry = {
      "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      "resumed_at_step": step,
      "changes": {k: {"from": old, "to": new} for k, (old, new) in accepted.items()},
    }
    history = run / HISTORY_FILE  # rewritten whole: object stores cannot append
    previous = history.read_text() if history.exists() else ""
    history.write_text(previous + json.dumps(entry, sort_keys=True) + "\n")
    said = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in accepted.items())
    data = any(k.startswith("data.") and k != "data.num_workers" for k in accepted)
    (logging.warning if data else logging.info)(
      "Resuming at step %d with changed settings (%s)%s; recorded in %s",
      step,
      said,
      ": the run continues on the data these name" if data else "",
      history,
    )
    unread = unread_schedule_keys(config, accepted)
    if unread:
      sections = sorted({k.split(".")[1] for k in unread})
      reads = sorted(schedule_sections(config, accepted) or ())
      logging.info(
        "%s: the %s schedule does not read schedule.%s (it reads %s), so %s no effect on "
        "this run's training",
        ", ".join(unread),
        config.schedule.name,
        ", schedule.".join(sections),
        ", ".join(f"schedule.{s}" for s in reads) or "no schedule section",
        "this change has" if len(unread) == 1 else "these changes have",
      )


_OTHER_DATA = (
  "Resume with the data the run was trained on, or start a new --workdir. Nothing was written."
)


def vocabulary_difference(saved: str, new: str) -> str:
  """How two vocabularies differ, in words: the letters only in each, or their order."""
  gone, added = sorted(set(saved) - set(new)), sorted(set(new) - set(saved))
  if gone or added:
    return f"only in the checkpoint's: {''.join(gone)!r}; only in the new: {''.join(added)!r}"
  return "the same symbols in another order"


def check_same_vocabulary(config, source, workdir: str, step: int, meta: dict) -> None:
  """Token data: the files must give the vocabulary the checkpoint was trained on. data.path
  may change on a resume (the files moved), but text with other letters gives other token ids,
  and training on would silently change what every id means. Checked before the config: a
  vocabulary of another size also changes the resolved edm.sigma_data, which would be named."""
  saved, encoding = meta.get("vocab"), source.encoding
  if encoding is None or saved is None or saved == encoding.vocab:
    return
  new, d = encoding.vocab, config.data
  what = vocabulary_difference(saved, new)
  raise ResumeRefusedError(
    f"Cannot resume {workdir} at step {step}: data.name={d.name!r} with data.path={d.path!r} "
    f"and data.vocab={d.vocab!r} gives a vocabulary of {len(new)} symbols, but the checkpoint "
    f"was trained on {len(saved)} ({what}), so token ids would change meaning. {_OTHER_DATA}"
  )


def _split_changed(meta: dict, key: str, stats, attr: str) -> bool:
  """Whether the checkpoint recorded a split's digest (`meta[key]`) that the files' (`attr`
  of their stats) no longer match; checkpoints without the record are not checked."""
  saved = meta.get(key)
  return bool(saved) and stats is not None and getattr(stats, attr) != saved


def warn_if_held_out_changed(config, source, meta: dict, workdir: str, step: int) -> bool:
  """Token data: warns (and says True) when the files now hold out other sequences than the
  checkpoint at `step` was trained with. The held-out records are picked by a hash of their
  names, file name included, so a renamed or gzipped file, or records added or removed, pick
  others: a resume then trains on windows its earlier evaluations held out, and an evaluation
  scores against windows the model may have trained on. Checkpoints without the record
  (before 2026-12-06) are not checked."""
  if not _split_changed(meta, "held_out", source.stats, "held_out_digest"):
    return False
  logging.warning(
    "%s at step %d: data.path=%r now holds out other sequences than the run was trained with "
    "(a data file renamed or compressed, whose name is part of how held-out records are "
    "picked, or records added, removed or edited): held-out windows may be ones the model "
    "trained on, and domain metrics from here on do not compare with the run's earlier ones. "
    "To compare, point data.path at the files as they were, under their old names.",
    workdir, step, config.data.path,
  )  # fmt: skip
  return True


def warn_if_training_data_changed(config, source, meta: dict, workdir: str, step: int) -> bool:
  """Token data: warns (and says True) when the files now hold other training sequences than
  the checkpoint at `step` was trained on (records added, removed or edited; the held-out ones
  unchanged, else `warn_if_held_out_changed` speaks). Training goes on with them, and the
  domain metrics' reference models, fitted on the training windows, are fitted anew: their
  curves may step at the resume. Checkpoints without the record (before 2026-12-07) are not
  checked."""
  if not _split_changed(meta, "trained_on", source.stats, "train_digest"):
    return False
  logging.warning(
    "%s at step %d: data.path=%r now holds other training sequences than the run was trained "
    "on (records added, removed or edited). Training goes on with them, and the reference "
    "models of the domain metrics are fitted on the new training windows, so those metrics "
    "may step here against the run's earlier ones. To go on with the same data, point "
    "data.path at the files as they were.",
    workdir, step, config.data.path,
  )  # fmt: skip
  return True


def source_on_saved_vocabulary(config, vocab: str | None, workdir: str, step: int):
  """The data source a trained run's command (evaluate, diagnose) reads, on the vocabulary the
  checkpoint at `step` was trained on (`vocab`, from its metadata; None: not token data).
  Files that lost letters of a derived vocabulary are read on the checkpoint's (pinned in
  `config.data.vocab`, as a resume pins it): the ids keep their meaning. Files giving other
  letters are refused: every id would mean another symbol, and the metrics or the profile
  would be computed on scrambled data without a word."""
  from infonoise_jax.data import load_source

  source = load_source(config)  # a missing file: the loader's error, before any restore
  if not vocab:
    return source
  derived = source.encoding.vocab if source.encoding else ""
  if not config.data.vocab and derived != vocab and set(derived) < set(vocab):
    config.data.vocab = vocab
    source = load_source(config)
  new, d = source.encoding.vocab if source.encoding else "", config.data
  if new != vocab:
    raise ValueError(
      f"{workdir} at step {step} was trained on the {len(vocab)}-symbol vocabulary {vocab!r}, "
      f"but data.name={d.name!r} with data.path={d.path!r} and data.vocab={d.vocab!r} gives "
      f"{len(new)} symbols {new!r} ({vocabulary_difference(vocab, new)}), so token ids would "
      "change meaning. Point --set data.path at the data the run was trained on (where it "
      "lies now)"
    )
  return source


def check_same_shape(config, source, workdir: str, step: int, meta: dict) -> None:
  """The files must give examples of the shape the checkpoint was trained on (data.path may
  change on a resume; other files can hold images of another size or channel count). Checked
  after the config, which names a changed key such as data.image_size first, and before the
  restore, whose shape mismatch would blame the model."""
  saved, new = meta.get("data_shape"), tuple(source.shape)
  if saved is None or tuple(saved) == new:
    return
  d = config.data
  raise ResumeRefusedError(
    f"Cannot resume {workdir} at step {step}: data.name={d.name!r} with data.path={d.path!r} "
    f"gives examples of shape {new}, but the checkpoint was trained on {tuple(saved)}. "
    f"{_OTHER_DATA}"
  )
