"""EDM's CIFAR-10 recipe (Karras et al. 2022, unconditional DDPM++), on tfds-prepared CIFAR-10.

Launch: `--config=configs/cifar10_edm.py` (DDPM++) or `--config=configs/cifar10_edm.py:ncsnpp`.
Values follow EDM's train.py / training_loop.py defaults for CIFAR-10:
  batch 512, Adam lr 1e-3 (betas 0.9, 0.999, eps 1e-8) ramped linearly over 10 Mimg
  (= 19,531 steps), EMA half-life 500 kimg with ramp-up ratio 0.05, 200 Mimg
  (= 390,625 steps), dropout 0.13, sigma_data 0.5, log-normal sigma (P_mean -1.2, P_std 1.2),
  18-step Heun sampler (35 evaluations).
Differences from EDM:
  - no gradient clipping (grad_clip 0), as in EDM; EDM instead replaces NaN/Inf gradient
    entries (nan_to_num), which this trainer does not do: it aborts on non-finite values.
  - EDM's non-leaking augmentation pipeline (p = 0.12, 9 augmentation labels) is not
    implemented; its x-flip part (applied to every image with probability 1/2) is kept as
    data.random_flip. The network therefore has no augmentation-label mapping:
    55,732,739 parameters instead of EDM's 55,733,891 (the 9 x 128 map_augment weights).
"""

import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location(
  "default_config", pathlib.Path(__file__).with_name("default.py")
)
default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default)

IMAGES_PER_STEP = 512
LR_RAMP_IMAGES = 10_000_000  # EDM lr_rampup_kimg = 10000
TOTAL_IMAGES = 200_000_000  # EDM --duration=200 (Mimg)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """EDM CIFAR-10; `variant` is '' / 'ddpmpp' or 'ncsnpp'."""
  if variant not in ("", "ddpmpp", "ncsnpp"):
    raise ValueError(
      f"Unknown variant {variant!r} of the CIFAR-10 configs: ddpmpp | ncsnpp (the architecture; "
      "the schedule is --config.schedule.name, e.g. =lognormal)"
    )
  c = default.get_config()
  c.data.name = "tfds:cifar10"
  c.data.split = "train"
  c.data.image_size = 0  # native 32x32
  c.data.scale = 1.0  # pixels in [-1, 1], as EDM
  c.data.random_flip = True  # stands in for the x-flip of EDM's augmentation pipeline

  c.edm.sigma_data = 0.5
  c.edm.sigma_min = 0.002
  c.edm.sigma_max = 80.0

  c.model.name = "unet"
  c.model.arch = variant or "ddpmpp"
  c.model.model_channels = 128
  c.model.channel_mult = (2, 2, 2)
  c.model.num_blocks = 4
  c.model.attn_resolutions = (16,)
  c.model.dropout = 0.13
  c.model.embedding_type = ""  # arch default
  c.model.encoder_type = ""  # arch default
  c.model.dtype = "float32"  # EDM trains CIFAR-10 in fp32; bfloat16 is an option

  c.schedule.name = "lognormal"
  c.schedule.lognormal.p_mean = -1.2
  c.schedule.lognormal.p_std = 1.2

  c.optim.lr = 1e-3
  c.optim.warmup_steps = LR_RAMP_IMAGES // IMAGES_PER_STEP  # 19,531
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.grad_clip = 0.0  # EDM does not clip (it zeroes NaN gradient entries instead)
  c.optim.ema_halflife_kimg = 500.0
  c.optim.ema_warmup_ratio = 0.05

  c.train.batch_size = IMAGES_PER_STEP
  c.train.num_steps = TOTAL_IMAGES // IMAGES_PER_STEP  # 390,625
  c.train.log_every = 500
  c.train.checkpoint_every = 5000
  c.train.keep_checkpoints = 3
  c.train.sample_every = 10_000
  c.train.num_samples = 64
  c.train.fid_every = 20_000  # ~10 Mimg
  c.train.fid_num_samples = 10_000  # final numbers: rerun with 50k (EDM protocol)

  c.sampler.name = "heun"
  c.sampler.num_steps = 18
  c.sampler.grid = "karras"
  c.sampler.rho = 7.0
  return c
