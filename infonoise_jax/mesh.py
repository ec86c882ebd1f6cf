"""The device mesh: one `data` axis over every device, Auto axis types.

Auto axes because current JAX defaults `jax.make_mesh` to Explicit axes, under which plain
array code raises ShardingTypeError. The batch is sharded over `data`; the train state is
replicated (a second axis for parameter sharding would be added here).
"""

from collections.abc import Sequence

import jax


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  auto = (jax.sharding.AxisType.Auto,)
  return jax.make_mesh((len(devices),), ("data",), axis_types=auto, devices=devices)
