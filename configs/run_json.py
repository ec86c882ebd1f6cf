"""A run's `config.json` as a config: train again exactly as that run was configured.

    python -m infonoise_jax.main --config=runs/a/config.json --workdir=runs/b

(the trainer passes a `.json` --config here) or, spelled out,
`--config=configs/run_json.py:runs/a/config.json`. The file is read as `sample` and
`evaluate` read it (migrated to the current keys; keys this checkout does not define are an
error naming them); `--config.KEY=...` overrides apply as with any config.
"""

import ml_collections


def get_config(path: str = "") -> ml_collections.ConfigDict:
  from infonoise_jax.validation import load_config_file

  if not path.endswith(".json"):
    raise ValueError(
      f"configs/run_json.py needs the path of a run's config.json after a colon, got {path!r}: "
      "--config=configs/run_json.py:runs/a/config.json (or --config=runs/a/config.json)"
    )
  return load_config_file(path)
