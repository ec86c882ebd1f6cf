"""How the commands end: one readable line for what a user can cause, a traceback on request.

A bad file, key, value, data set, checkpoint or workdir, a failed save, a NaN and missing
weights end the process with `error: <what happened and the fix>` on stderr and exit code 1;
a preempted run that saved its checkpoint, one stopped by SIGTERM before its first step
(nothing to save), or a save of several processes that failed because another process of the
run is gone (a lost host), exits with PREEMPTED_EXIT_CODE (75) so a scheduler requeues it; a
Ctrl-C that stops at once (a training run's second one) says so in one line, exit code 130.
`--debug` or INFONOISE_DEBUG=1 shows the full traceback instead (and the libraries' own error
logs); anything else (a bug) always shows it.
"""

import argparse
import logging as logging_lib
import os
import sys
from collections.abc import Callable

from infonoise_jax.checkpointing import (
  CheckpointError,
  Preempted,
  SaveFailedError,
  StoppedOutsideLoop,
)

DEBUG_ENV = "INFONOISE_DEBUG"
ERROR_EXIT_CODE = 1
INTERRUPTED_EXIT_CODE = 130  # the shell's code for a process ended by SIGINT
INTERRUPTED = (
  "Interrupted by Ctrl-C: stopped at once, nothing more saved. A training run resumes from "
  f"its last checkpoint with the same command (exit code {INTERRUPTED_EXIT_CODE}; "
  f"--debug or {DEBUG_ENV}=1 shows the traceback)"
)
# What a user's input or machine can cause; everything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, FloatingPointError, CheckpointError)


def positive_int(text: str) -> int:
  """argparse type: an int >= 1 (argparse turns the error into a usage message)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return value


def add_checkpoint_command_flags(p: argparse.ArgumentParser) -> None:
  """The flags every command that reads a run's checkpoint takes (sample, evaluate)."""
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument(
    "--batch", type=positive_int, default=None, help="samples per call (fid.batch_size)"
  )
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="a sampler setting (repeatable), e.g. --set sampler.s_churn=40 --set sampler.s_tmin=0.05 "
    "for EDM's stochastic sampler (--method=stochastic); or where the run's data now lies: "
    "--set data.path=<new place> (also data.local_dir, data.tfds_data_dir); evaluate on token "
    "runs: the domain metrics' settings, e.g. --set seq_metrics.ngram_sizes=1,2,3",
  )
  p.add_argument("--debug", action="store_true", help="show the traceback of an error")
  p.add_argument(
    "--distributed",
    action="store_true",
    help="multi-host: call jax.distributed.initialize with the run's system.* settings "
    "(as training with --config.system.distributed=True; run on every host)",
  )


def debug_requested(flag: bool = False) -> bool:
  return flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(e: BaseException) -> str:
  """The error's message and its notes (PEP 678: where TFDS lists the names it knows), as one
  line."""
  text = " ".join([str(e), *getattr(e, "__notes__", ())])
  return " ".join(text.split()) or type(e).__name__


def is_missing_package(e: BaseException) -> bool:
  """An ImportError that names the package to install (an optional dependency a setting needs,
  e.g. gcsfs for gs:// paths): the user's to fix, not a bug."""
  return isinstance(e, ImportError) and "install" in str(e).lower()


class QuietLibraryErrors(logging_lib.Filter):
  """Without --debug: library (Orbax, JAX) error records keep their first line, not the
  traceback they carry; the failure is reported once, as our own one line."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    if "/orbax/" in record.pathname or "/jax/_src/" in record.pathname:
      record.exc_info, record.exc_text, record.stack_info = None, None, None
      record.msg, record.args = str(record.getMessage()).split("\n", 1)[0], ()
    return True


def quiet_closed_event_loops(unraisable) -> None:
  """sys.unraisablehook without --debug: Orbax's asyncio callbacks that find their event loop
  closed (after a checkpoint read failed and was handled, e.g. a corrupt step moved aside)
  print "Exception ignored ... RuntimeError: Event loop is closed" tracebacks that report
  nothing wrong; they are dropped, every other unraisable exception is printed as usual."""
  e = unraisable.exc_value
  if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
    return
  sys.__unraisablehook__(unraisable)


SET_HINT = " (this command takes config keys as --set KEY=VALUE)"


def run_command(fn: Callable[[], object], debug: bool = False, takes_set: bool = False) -> None:
  """Runs a command's body; ends the process as the module docstring says. `takes_set`: the
  command sets config keys with `--set KEY=VALUE` (sample, evaluate, diagnose), so an error
  that names the trainer's `--config.KEY` spelling (shared checks) says so (SET_HINT)."""
  debug = debug_requested(debug)
  if not debug:
    quiet = QuietLibraryErrors()
    for handler in logging_lib.getLogger().handlers:
      handler.addFilter(quiet)
    sys.unraisablehook = quiet_closed_event_loops
  try:
    fn()
  except (Preempted, StoppedOutsideLoop) as e:
    print(one_line(e), file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:
    # Training: a second Ctrl-C (the first one saves and stops); sample, evaluate: the first.
    if debug:
      raise
    print(INTERRUPTED, file=sys.stderr, flush=True)
    sys.exit(INTERRUPTED_EXIT_CODE)
  except (*USER_ERRORS, ImportError) as e:
    if debug or (isinstance(e, ImportError) and not is_missing_package(e)):
      raise
    hint = f"(--debug or {DEBUG_ENV}=1 shows the traceback)"
    text = one_line(e)
    if takes_set and "--config." in text:
      text += SET_HINT
    print(f"error: {text} {hint}", file=sys.stderr, flush=True)
    if isinstance(e, SaveFailedError):
      # Orbax's writer threads of the failed save can stay blocked (on the part that failed)
      # and print a traceback each at interpreter shutdown: everything of ours is closed and
      # flushed by now, so end without waiting for them.
      logging_lib.shutdown()
      sys.stdout.flush()
      os._exit(getattr(e, "exit_code", ERROR_EXIT_CODE))  # a lost peer: 75, requeue
    sys.exit(ERROR_EXIT_CODE)
