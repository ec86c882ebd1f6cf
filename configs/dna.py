"""DNA: windows of 128 bases from Debian's kaptive-data references, transformer denoiser.

  python -m infonoise_jax.main --config=configs/dna.py --workdir=runs/dna_info
  python -m infonoise_jax.main --config=configs/dna.py:lognormal --workdir=runs/dna_ln

Variants (comma list): any schedule name (default infonoise, with the low-noise gate pinned
at c = 0.2, the value for non-image data, docs/method.md section 4 step 5; `lognormal` is
EDM's log-normal baseline, P_mean -1.2, P_std 1.2), and `cpu` (a small float32 transformer
and batch for a CPU smoke run). Tokens are centred one-hot vectors of scale 1
(data/tokens.py); edm.sigma_data = 0 makes the preconditioning use their std sqrt(V-1)/V.
The domain metrics (k-mer JS, GC distance, Frechet) run every train.eval_every steps on
train.eval_num_samples samples against as many held-out windows. Needs
`apt-get install -y kaptive-data` (or --config.data.path=<FASTA/GenBank file or folder>).
"""

import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location(
  "default_config", pathlib.Path(__file__).with_name("default.py")
)
default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(default)


VARIANTS = ("cpu",)  # the variant words besides the schedule names


def token_config(data_name: str, seq_len: int, variant: str) -> ml_collections.ConfigDict:
  """The token-data recipe shared by configs/dna.py and configs/text.py."""
  from infonoise_jax.schedules import SCHEDULES, variant_schedule  # the one list of names

  c = default.get_config()
  c.data.name = data_name
  c.data.seq_len = seq_len
  c.data.scale = 1.0  # one-hot scale a: codewords a sqrt(2) apart
  c.edm.sigma_data = 0.0  # = a sqrt(V - 1) / V, the encoding's per-dim std
  c.model.name = "transformer"
  c.model.width, c.model.depth, c.model.num_heads, c.model.mlp_ratio = 384, 8, 6, 4  # ~22M
  c.model.dtype = "bfloat16"
  c.schedule.name = "infonoise"
  c.schedule.infonoise.gate = "pinned"
  c.schedule.infonoise.gate_pivot = 0.2  # non-image data (docs/method.md)
  c.schedule.infonoise.warmup_steps = 500
  c.schedule.infonoise.refresh_every = 100
  c.optim.lr = 5e-4
  c.optim.warmup_steps = 500
  c.optim.ema_halflife_kimg = 100.0
  c.train.batch_size = 256
  c.train.num_steps = 20000
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  c.train.sample_every = 2000
  c.train.eval_every = 1000
  c.train.eval_num_samples = 1024
  c.sampler.num_steps = 32
  c.schedule.name = variant_schedule(variant) or c.schedule.name
  for token in filter(None, (t.strip() for t in variant.split(","))):
    if token in SCHEDULES:
      continue  # set above
    elif token == "cpu":
      c.model.width, c.model.depth, c.model.num_heads = 64, 2, 4
      c.model.dtype = "float32"
      c.train.batch_size = 64
      c.train.num_steps = 2000
      c.train.eval_every = 500
      c.train.eval_num_samples = 256
      c.sampler.num_steps = 16
      c.seq_metrics.classifier_steps = 200
    else:
      raise ValueError(
        f"Unknown config variant {token!r}; valid: {', '.join(SCHEDULES)}, {', '.join(VARIANTS)}"
      )
  return c


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  return token_config("dna", 128, variant)
