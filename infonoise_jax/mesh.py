"""The device mesh: one `data` axis over every device, Auto axis types; multi-host start-up.

Auto axes because current JAX defaults `jax.make_mesh` to Explicit axes, under which plain
array code raises ShardingTypeError. The batch is sharded over `data`; the train state is
replicated (a second axis for parameter sharding would be added here).
"""

import os
from collections.abc import Sequence

import jax
from absl import logging


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  auto = (jax.sharding.AxisType.Auto,)
  return jax.make_mesh((len(devices),), ("data",), axis_types=auto, devices=devices)


def initialize_distributed(config) -> None:
  """Opt-in multi-host start-up; must run before any other JAX call."""
  s = config.system
  if not s.distributed:
    return
  if s.num_processes > 0 and s.process_id >= s.num_processes:
    raise ValueError(
      f"system.process_id={s.process_id} with system.num_processes={s.num_processes}: process "
      f"ids run from 0 to {s.num_processes - 1}"
    )
  if jax.config.jax_platforms in (None, "", "cpu") and s.coordinator_address:
    # CPU collectives across processes (used by the localhost multi-process test).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if s.coordinator_address:
    kwargs["coordinator_address"] = s.coordinator_address
  if s.num_processes > 0:
    kwargs["num_processes"] = s.num_processes
  if s.process_id >= 0:
    kwargs["process_id"] = s.process_id
  # initialize() waits for every process in silence (minutes): say what it waits for first.
  where = s.coordinator_address or "the coordinator the platform names (TPU VM, Slurm, ...)"
  who = f"process {s.process_id}" if s.process_id >= 0 else "this process"
  of = f" of {s.num_processes}" if s.num_processes > 0 else ""
  logging.info(
    "Multi-host start-up: %s%s connecting to %s; it waits until every process has joined (a "
    "wrong system.coordinator_address or a process that never starts shows as a wait here).",
    who,
    of,
    where,
  )
  jax.distributed.initialize(**kwargs)


DEFAULT_COMPILATION_CACHE_DIR = "~/.cache/infonoise_jax/xla"  # configs/default.py's value


def configure_compilation_cache(system) -> None:
  """Turns on JAX's persistent compilation cache in `system.compilation_cache_dir`.

  Must run before the first compile. Programs that took at least
  `system.compilation_cache_min_secs` to build are written there; a later process with the
  same program, JAX version and devices loads them instead of compiling. With the key at its
  default and JAX_COMPILATION_CACHE_DIR set, the environment's folder is used (a job's or the
  test session's own cache; a folder given as the key still wins).
  """
  if system.compilation_cache_min_secs < 0:
    raise ValueError(
      f"system.compilation_cache_min_secs must be >= 0, got {system.compilation_cache_min_secs}"
    )
  if not system.compilation_cache_dir:
    return
  folder = system.compilation_cache_dir
  if folder == DEFAULT_COMPILATION_CACHE_DIR and os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    folder = os.environ["JAX_COMPILATION_CACHE_DIR"]
  if "://" not in folder:
    folder = os.path.expanduser(folder)
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", system.compilation_cache_min_secs)
