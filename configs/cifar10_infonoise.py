"""InfoNoise on EDM's CIFAR-10 recipe: configs/cifar10_edm.py with only the schedule changed.

Launch: `--config=configs/cifar10_infonoise.py` (DDPM++) or `...:ncsnpp`. The network,
optimizer, EMA, loss weight and sampler stay EDM's (docs/method.md section 2: InfoNoise changes
only pi). Warm-up draws from EDM's log-normal; the low-noise gate is pinned at c = 0.15, the
value reported for natural images (docs/method.md section 4, step 5).
"""

import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location(
  "cifar10_edm_config", pathlib.Path(__file__).with_name("cifar10_edm.py")
)
cifar10_edm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cifar10_edm)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """EDM CIFAR-10 with the InfoNoise schedule; `variant` is '' / 'ddpmpp' or 'ncsnpp'."""
  c = cifar10_edm.get_config(variant)
  c.schedule.name = "infonoise"
  c.schedule.infonoise.base = "lognormal"  # warm-up distribution: EDM's log-normal
  c.schedule.infonoise.gate = "pinned"
  c.schedule.infonoise.gate_pivot = 0.15  # natural images
  c.schedule.infonoise.compensate = True
  return c
